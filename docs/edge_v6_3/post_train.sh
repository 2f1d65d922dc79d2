#!/bin/bash
# Edge v6.3 (docs/edge_v6_3/train.sh): v6.2 plus the depth image completer.
#   bash docs/edge_v6_3/post_train.sh val       # v6.3 vs v6.2 on seed 1001 with depth missing, and its full table
#   bash docs/edge_v6_3/post_train.sh heldout   # seeds 2024, 2025, 2024 realistic (reporting only)
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
R=${R:-runs/edge_v6_3}
CK=$R/edge_v6_3.pt
BASE=${BASE:-runs/edge_v6_2_shipped.pt}
python - "$BASE" "$CK" <<'PY'
import sys, torch
from damcseg_core.checkpoint import load_checkpoint
a, b = (load_checkpoint(p)["model"] for p in sys.argv[1:3])
same = all(torch.equal(a[k], b[k]) for k in a)
new = sorted({k.split(".")[0] for k in b if k not in a})
print(f"every v6.2 tensor bit-identical: {same}; new modules: {new}")
sys.exit(0 if same and new == ["depth_completer"] else 1)
PY
case "${1:-val}" in
  val)
    for m in depth rgb+depth depth+thermal; do
      python tools/compare_checkpoints.py --data "$VAL" --protocol missing:$m "$BASE" "$CK" \
         --out "$R/compare_missing_${m}_val1001.json" | tail -2
    done
    eval_set "$R/eval_val1001" "$VAL" "$CK"
    ;;
  heldout)
    for s in 2024 2025; do
      spec=S$s
      python tools/compare_checkpoints.py --data "${!spec}" --protocol missing:depth "$BASE" "$CK" \
         --out "$R/compare_missing_depth_$s.json" | tail -2
    done
    python tools/compare_checkpoints.py --data "$S2024,$REAL" --protocol missing:depth "$BASE" "$CK" \
       --out "$R/compare_missing_depth_2024real.json" | tail -2
    eval_set "$R/eval_2024" "$S2024" "$CK"
    eval_set "$R/eval_2025" "$S2025" "$CK"
    eval_set "$R/eval_2024real" "$S2024,$REAL" "$CK"
    ;;
  *)
    echo "usage: $0 val|heldout" >&2
    exit 2
    ;;
esac
echo done
