#!/bin/bash
# After runs/edge_v4_mcn finishes (config/train/edge_v4_mcn.yaml): strip the checkpoint, check that
# everything but the MCN is bit-identical to v3, score the completion protocols on the validation
# seed next to v3 (the decision), then on the held-out sets (reporting only).
#   bash docs/edge_v4/post_train.sh val       # candidate and v3 on validation seed 1001 (ideal and realistic sensors)
#   bash docs/edge_v4/post_train.sh heldout   # seeds 2024, 2025, 2024 with realistic sensors
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
R=${R:-runs/edge_v4_mcn}  # the run directory
V3=runs/edge_v3_shipped.pt
V3_VAL=runs/edge_v3_val  # v3 on the validation sets, shared by every run it is compared with
case "${1:-val}" in
  val)
    python tools/ship_checkpoint.py $R/last.pt $R/candidate.pt
    only_mcn_changed "$V3" "$R/candidate.pt"
    mkdir -p $V3_VAL
    for name_spec in "val1001 $VAL" "val1001real $VAL,$REAL"; do
      read -r name spec <<< "$name_spec"
      eval_set $R/eval_$name "$spec" $R/candidate.pt
      [ -f $V3_VAL/$name/metrics.json ] || eval_set $V3_VAL/$name "$spec" $V3
    done
    ;;
  heldout)
    eval_set $R/eval_2024 synthetic:frames=48,size=256x512,seed=2024 $R/candidate.pt
    eval_set $R/eval_2025 synthetic:frames=200,size=256x512,seed=2025 $R/candidate.pt
    eval_set $R/eval_2024real synthetic:frames=48,size=256x512,seed=2024,$REAL $R/candidate.pt
    ;;
esac
echo done
