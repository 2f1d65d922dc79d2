# Shared by the docs/edge_v*/post_train.sh scripts (source it after `cd` to the repository root):
# the validation / held-out / realistic-sensor specs, one completion-protocol evaluation, the check
# that a frozen_eval MCN stage changed nothing but the MCN, and the threshold / validation /
# held-out steps that a main run + MCN stage goes through (edge v5, v6), and the sensor-missing
# comparison on validation (edge v6.1, v6.2, v7s).
VAL="synthetic:frames=48,size=256x512,seed=1001"
REAL="depth=mix,lidar_fraction=0.5,thermal=realistic"
S2024="synthetic:frames=48,size=256x512,seed=2024"
S2025="synthetic:frames=200,size=256x512,seed=2025"

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

compare_missing_val() {  # out_dir base.pt candidate.pt modality...: candidate - base on seed 1001, each sensor missing (MCN)
  local out=$1 base=$2 ck=$3 m
  shift 3
  for m in "$@"; do
    python tools/compare_checkpoints.py --data "$VAL" --protocol "missing:$m" "$base" "$ck" \
       --out "$out/compare_missing_${m}_val1001.json" | tail -1
  done
}

chosen_threshold() {  # run_dir: the threshold choose_threshold wrote to run_dir/threshold.json
  python -c "import json; print(json.load(open('$1/threshold.json'))['chosen']['threshold'])"
}

choose_threshold() {  # run_dir [checkpoint]: score threshold of checkpoint (run_dir/best.pt) on validation
  python tools/choose_score_threshold.py "${2:-$1/best.pt}" --data "$VAL" --out "$1/threshold.json"
  echo "threshold $(chosen_threshold "$1")"
}

validate_candidate() {  # run_dir mcn_dir candidate.pt base.pt: ship the MCN stage, check it, compare
  python tools/ship_checkpoint.py "$2/last.pt" "$3"
  # The MCN stage is frozen_eval: everything but the MCN / completion flag must equal the main run's best.pt.
  only_mcn_changed "$1/best.pt" "$3"
  python tools/compare_checkpoints.py --data "$VAL" "$4" "$3" --out "$2/compare_val1001.json" | tee "$2/compare_val1001.log"
  eval_set "$2/eval_val1001" "$VAL" "$3"
  eval_set "$2/eval_val1001real" "$VAL,$REAL" "$3"
}

heldout_report() {  # out_dir checkpoint.pt base.pt: the held-out seeds, detection, peers (reporting only)
  python tools/compare_checkpoints.py --data "$S2024" "$3" "$2" --out "$1/compare_2024.json" | tee "$1/compare_2024.log"
  python tools/compare_checkpoints.py --data "$S2025" "$3" "$2" --out "$1/compare_2025.json" | tee "$1/compare_2025.log"
  eval_set "$1/eval_2024" "$S2024" "$2"
  eval_set "$1/eval_2025" "$S2025" "$2"
  eval_set "$1/eval_2024real" "$S2024,$REAL" "$2"
  python tools/detection_eval.py --checkpoint "$3" --checkpoint "$2" \
     --data "$S2024" --data "$S2025" --data "$S2024,$REAL" --out "$1/detection_eval.json" > "$1/detection_eval.log" 2>&1
  date
  # The accuracy-at-budget peers, scored with this checkpoint as "ours" (the peers are not
  # retrained); needs their runs under runs/peers/ (benchmarks/accuracy_at_budget.py trains them).
  for peer in lraspp_stacked fcos_rgb; do
    if [ -d "runs/peers/$peer" ]; then
      python benchmarks/accuracy_at_budget.py --peer $peer --eval-only --out "runs/peers/$peer" --ours "$2" \
         --result "$1/accuracy_at_budget_$peer.json" > "$1/accuracy_at_budget_$peer.log" 2>&1
      tail -4 "$1/accuracy_at_budget_$peer.log"
    else
      echo "no runs/peers/$peer: peer not scored"
    fi
  done
}
