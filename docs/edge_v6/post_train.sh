#!/bin/bash
# Edge v6 after its main run (config/train/edge_v6.yaml), in order:
#   bash docs/edge_v6/post_train.sh threshold  # score threshold on validation seed 1001 (-> edge_v6_mcn.yaml)
#   damcseg-train --config config/train/edge_v6_mcn.yaml
#   bash docs/edge_v6/post_train.sh val        # candidate checkpoint, checks, v4 vs v6 on seed 1001 (the decision)
#   SHIP=runs/edge_v6_mcn/candidate_nolocal.pt bash docs/edge_v6/post_train.sh heldout
#       # the variant chosen on validation, on seeds 2024, 2025, 2024 realistic (reporting only)
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
R=runs/edge_v6
M=runs/edge_v6_mcn
CK=$M/candidate.pt
SHIP=${SHIP:-$CK}  # heldout: the variant chosen on validation (candidate.pt or candidate_nolocal.pt)
V4=${V4:-runs/edge_v4_shipped.pt}  # edge v4, the shipped checkpoint before v6 (from git)
[ -f "$V4" ] || git show 888c62b:damcseg_core/weights/damcseg_edge.pt > "$V4"
case "${1:-val}" in
  threshold)
    choose_threshold $R
    ;;
  val)
    validate_candidate $R $M $CK $V4
    # The local ROI path, trained on ground-truth boxes, hurt v5 on predicted ones: the same
    # weights with it off (refinement.use_local), paired against it on validation.
    python tools/ship_checkpoint.py $CK $M/candidate_nolocal.pt --set refinement.use_local=false
    python tools/compare_checkpoints.py --data $VAL $CK $M/candidate_nolocal.pt --out $M/local_off_val1001.json \
       | tee $M/local_off_val1001.log
    ;;
  heldout)
    heldout_report $M $SHIP $V4
    ;;
  *)
    echo "usage: $0 threshold|val|heldout" >&2
    exit 2
    ;;
esac
echo done
