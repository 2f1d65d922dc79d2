# Shared by the docs/edge_v*/post_train.sh scripts (source it after `cd` to the repository root):
# the validation / realistic-sensor specs, one completion-protocol evaluation, and the check that
# a frozen_eval MCN stage changed nothing but the MCN.
VAL="synthetic:frames=48,size=256x512,seed=1001"
REAL="depth=mix,lidar_fraction=0.5,thermal=realistic"

eval_set() {  # out_dir spec checkpoint: the condition x protocol table with its bootstrap, then the time
  damcseg-eval --checkpoint "$3" --data "$2" --protocol completion --bootstrap 500 --no-progress \
     --out "$1" > "$1.log" 2>&1
  date
}

only_mcn_changed() {  # before.pt after.pt: fails unless every changed tensor is in the MCN / completion flag
  python - "$1" "$2" <<'PY'
import sys, torch
from damcseg_core.checkpoint import load_checkpoint
a, b = (load_checkpoint(p)["model"] for p in sys.argv[1:3])
mcn = ("completion.", "attention.completion_embed")
changed = sorted(k for k in a if not torch.equal(a[k], b[k]))
outside = [k for k in changed if not k.startswith(mcn)]
print(f"{len(changed)} tensors changed, all in the MCN / completion flag: {not outside}")
sys.exit(1 if outside else 0)
PY
}
