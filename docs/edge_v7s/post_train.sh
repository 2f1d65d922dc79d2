#!/bin/bash
# Edge v7s (config/train/edge_v7s.yaml: the fast variant on 2 CPU cores) after its main run, in order:
#   bash docs/edge_v7s/post_train.sh threshold  # score threshold of best.pt on validation seed 1001
#   damcseg-train --config config/train/edge_v7s_mcn.yaml model_overrides.detection.score_threshold=T
#   bash docs/edge_v7s/post_train.sh val        # candidate, checks, v6.2 (shipped) vs v7s on seed 1001: the decision
#   bash docs/edge_v7s/post_train.sh heldout    # seeds 2024, 2025, 2024 realistic (reporting only)
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
R=runs/edge_v7s
M=runs/edge_v7s_mcn
CK=$M/candidate.pt
BASE=${BASE:-runs/edge_v6_2_shipped.pt}  # edge v6.2, the shipped checkpoint before v7s (from git)
[ -f "$BASE" ] || git show 056b017:damcseg_core/weights/damcseg_edge.pt > "$BASE"
case "${1:-val}" in
  threshold)
    choose_threshold $R
    ;;
  val)
    validate_candidate $R $M $CK $BASE
    compare_missing_val "$M" "$BASE" "$CK" thermal depth
    ;;
  heldout)
    heldout_report $M $CK $BASE
    ;;
  *)
    echo "usage: $0 threshold|val|heldout" >&2
    exit 2
    ;;
esac
echo done
