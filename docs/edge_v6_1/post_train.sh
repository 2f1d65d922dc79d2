#!/bin/bash
# Edge v6.1 after its detection stage (config/train/edge_v6_1_det.yaml):
#   bash docs/edge_v6_1/post_train.sh val       # threshold on seed 1001, the candidate, v6 vs v6.1 (the decision)
#   damcseg-train --config config/train/edge_v6_1_mcn.yaml
#   bash docs/edge_v6_1/post_train.sh mcn       # the MCN retrained inside v6.1 vs v6.1's (v6's) MCN, seed 1001
#   SHIP=runs/edge_v6_1_mcn/candidate.pt bash docs/edge_v6_1/post_train.sh heldout
#       # the variant chosen on validation, on seeds 2024, 2025, 2024 realistic sensors (reporting only)
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
R=runs/edge_v6_1_det
CK=$R/candidate.pt
M=runs/edge_v6_1_mcn
SHIP=${SHIP:-$CK}
V6=${V6:-runs/edge_v6_shipped.pt}  # edge v6 as shipped, from git
[ -f "$V6" ] || git show 88a2b51:damcseg_core/weights/damcseg_edge.pt > "$V6"
case "${1:-val}" in
  val)
    choose_threshold $R "$R/last.pt"
    python tools/ship_checkpoint.py "$R/last.pt" "$CK" --set detection.score_threshold=$(chosen_threshold $R)
    python tools/compare_checkpoints.py --data "$VAL" "$V6" "$CK" --out "$R/compare_val1001.json" | tee "$R/compare_val1001.log"
    python tools/detection_eval.py --checkpoint "$V6" --checkpoint "$CK" --data "$VAL" \
       --out "$R/detection_eval_val1001.json" > "$R/detection_eval_val1001.log" 2>&1
    ;;
  mcn)
    python tools/ship_checkpoint.py "$M/last.pt" "$M/candidate.pt"
    only_mcn_changed "$CK" "$M/candidate.pt"
    compare_missing_val "$M" "$CK" "$M/candidate.pt" thermal depth rgb
    eval_set "$M/eval_val1001" "$VAL" "$M/candidate.pt"
    ;;
  heldout)
    heldout_report "$(dirname "$SHIP")" "$SHIP" $V6
    ;;
  *)
    echo "usage: $0 val|mcn|heldout" >&2
    exit 2
    ;;
esac
echo done
