#!/bin/bash
# Edge v5 after its main run (config/train/edge_v5.yaml), in order:
#   bash docs/edge_v5/post_train.sh threshold  # score threshold on validation seed 1001 (-> edge_v5_mcn.yaml)
#   damcseg-train --config config/train/edge_v5_mcn.yaml
#   bash docs/edge_v5/post_train.sh val        # candidate checkpoint, checks, v4 vs v5 on seed 1001 (the decision)
#   bash docs/edge_v5/post_train.sh heldout    # seeds 2024, 2025, 2024 realistic; peers paired (reporting only)
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
R=runs/edge_v5
M=runs/edge_v5_mcn
CK=$M/candidate.pt
V4=${V4:-runs/edge_v4_shipped.pt}  # edge v4, the shipped checkpoint before v5 and v6 (from git)
[ -f "$V4" ] || git show 888c62b:damcseg_core/weights/damcseg_edge.pt > "$V4"
case "${1:-val}" in
  threshold)
    choose_threshold $R
    ;;
  val)
    validate_candidate $R $M $CK $V4
    ;;
  heldout)
    heldout_report $M $CK $V4
    ;;
  *)
    echo "usage: $0 threshold|val|heldout" >&2
    exit 2
    ;;
esac
echo done
