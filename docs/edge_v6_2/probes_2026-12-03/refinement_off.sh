#!/bin/bash
# The shipped v6.2 weights with parts of the refinement switched off at inference, paired against
# the full model on the same frames (docs/edge_v6_2/probes_2026-12-03.md, section 4):
#   no_crf          refinement.use_crf=false
#   no_depth_prior  the depth-prior path's learned strength set to exp(-60) = 0: its logits equal
#                   the global path's, so DSAF's mixture gives back the global path (the local path
#                   is off in the shipped checkpoint), then the CRF
#   global_only     both: the global path's own mask
set -eo pipefail
cd "$(dirname "$0")/../../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
A=runs/ablate_inf
mkdir -p $A
python - <<'PY'
import torch
from damcseg_core.checkpoint import load_model, save_checkpoint
m = load_model("damcseg_core/weights/damcseg_edge.pt")
with torch.no_grad():
    m.refinement.post_path.log_strength.fill_(-60.0)
save_checkpoint("runs/ablate_inf/no_depth_prior.pt", m)
PY
python tools/ship_checkpoint.py $A/no_depth_prior.pt $A/global_only.pt --set refinement.use_crf=false
python tools/ship_checkpoint.py damcseg_core/weights/damcseg_edge.pt $A/no_crf.pt --set refinement.use_crf=false
for spec in "val1001 $VAL" "2024 $S2024" "2025 $S2025"; do
  set -- $spec
  python tools/compare_checkpoints.py --data "$2" damcseg_core/weights/damcseg_edge.pt \
    $A/no_crf.pt $A/no_depth_prior.pt $A/global_only.pt --out $A/refinement_off_$1.json | tail -3
done
for c in no_depth_prior global_only; do
  for spec in "2024 $S2024" "2025 $S2025"; do
    set -- $spec
    damcseg-eval --checkpoint $A/$c.pt --data "$2" --protocol full --bootstrap 0 --no-progress \
      --out $A/eval_${c}_$1 > $A/eval_${c}_$1.log 2>&1
  done
done
