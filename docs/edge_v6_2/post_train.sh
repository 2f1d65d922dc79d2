#!/bin/bash
# Edge v6.2 (config/train/edge_v6_2_{gates,mcn}.yaml): v6.1's attention gates retrained with the
# omega cost and the scene-context offset, everything else frozen.
#   damcseg-train --config config/train/edge_v6_2_gates.yaml
#   bash docs/edge_v6_2/post_train.sh val       # candidate vs v6.1 on seed 1001: all sensors, sensor missing, omega by condition
#   damcseg-train --config config/train/edge_v6_2_mcn.yaml
#   bash docs/edge_v6_2/post_train.sh mcn       # the MCN retrained inside the new gates vs the gates' candidate, seed 1001
#   bash docs/edge_v6_2/post_train.sh heldout   # the MCN-stage candidate on seeds 2024, 2025, 2024 realistic (reporting only)
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
R=${R:-runs/edge_v6_2_gates}
CK=$R/candidate.pt
M=runs/edge_v6_2_mcn
BASE=${BASE:-runs/edge_v6_1_shipped.pt}  # edge v6.1 as shipped
[ -f "$BASE" ] || git show 7e3830b:damcseg_core/weights/damcseg_edge.pt > "$BASE"
case "${1:-val}" in
  val)
    python tools/ship_checkpoint.py "$R/last.pt" "$CK"
    python - "$BASE" "$CK" <<'PY'
import sys, torch
from damcseg_core.checkpoint import load_checkpoint
a, b = (load_checkpoint(p)["model"] for p in sys.argv[1:3])
changed = sorted(k for k in b if k not in a or not torch.equal(a[k], b[k]))
outside = [k for k in changed if not k.startswith("attention.")]
print(f"{len(changed)} tensors changed or new, all in the attention: {not outside}")
sys.exit(1 if outside else 0)
PY
    python tools/compare_checkpoints.py --data "$VAL" "$BASE" "$CK" --out "$R/compare_val1001.json" | tail -1
    compare_missing_val "$R" "$BASE" "$CK" thermal depth
    eval_set "$R/eval_val1001" "$VAL" "$CK"
    ;;
  mcn)
    python tools/ship_checkpoint.py "$M/last.pt" "$M/candidate.pt"
    only_mcn_changed "$CK" "$M/candidate.pt"
    compare_missing_val "$M" "$CK" "$M/candidate.pt" thermal depth rgb
    eval_set "$M/eval_val1001" "$VAL" "$M/candidate.pt"
    ;;
  heldout)
    heldout_report "$M" "$M/candidate.pt" "$BASE"
    ;;
  *)
    echo "usage: $0 val|mcn|heldout" >&2
    exit 2
    ;;
esac
echo done
