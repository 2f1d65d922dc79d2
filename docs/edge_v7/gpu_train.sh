#!/usr/bin/env bash
# Edge v7 on one GPU (issues #15-#17): both candidates in one lease, side by side on one card.
#
#   bash docs/edge_v7/gpu_train.sh OUT_DIR [BUDGET_SECONDS]
#
#   1. renders the two packed training caches of config/train/edge_v7_gpu.yaml (all cores);
#   2. a 30-step smoke run of each candidate, concurrently, on CUDA with bf16 autocast: checks the
#      CUDA/AMP path before the long runs and measures each one's step rate under the same load;
#   3. the main runs, concurrently, each with total_steps = its measured rate x BUDGET x 0.9, so both
#      end inside the budget (edge_v7_gpu.yaml: edge; edge_v7s_gpu.yaml: the fast variant);
#   4. each one's MCN stage inside its frozen network (*_mcn.yaml), 12% of its main-run steps;
#   5. strips the checkpoints (tools/ship_checkpoint.py) and packs logs into OUT_DIR.
#
# The step counts it chose are in OUT_DIR/gpu_train.log and in each run's config.yaml; rerunning
# the configs with those total_steps reproduces the schedule on any device (damcseg-train
# --config ... total_steps=N). Python comes from the environment (the GPU image's python3).
set -uo pipefail
OUT=${1:?usage: gpu_train.sh OUT_DIR [BUDGET_SECONDS]}
BUDGET=${2:-300}
PY=${PYTHON:-python3}
# For a dry run on a CPU: FRAMES_A=16 FRAMES_B=8 MIN_STEPS=4 TRAIN_OVERRIDES="device=cpu num_workers=1 batch_size=2"
FA=${FRAMES_A:-4000}
FB=${FRAMES_B:-2000}
MIN_STEPS=${MIN_STEPS:-200}
read -r -a EXTRA <<< "${TRAIN_OVERRIDES:-}"
CACHE_A=runs/cache/synthetic_f${FA}_256x512_s2
CACHE_B=runs/cache/real_f${FB}_s3
if [ "$FA" != 4000 ] || [ "$FB" != 2000 ]; then  # other cache sizes than the configs name
  CACHE_B=runs/cache/real_f${FB}_256x512_s3
  EXTRA+=("data.train=synthetic:frames=$FA,size=256x512,seed=2,cache=$CACHE_A;synthetic:frames=$FB,size=256x512,seed=3,depth=mix,lidar_fraction=0.5,thermal=realistic,cache=$CACHE_B")
fi
# The device tool returns at most 8 files from OUT: per-run logs live in runs/gpu_logs and are packed
# into one tarball after every phase, so a run stopped at its time limit still returns them.
LOGS=runs/gpu_logs
mkdir -p "$OUT" runs/cache "$LOGS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
log() { echo "[gpu_train $(date +%T)] $*" | tee -a "$OUT/gpu_train.log"; }
pack() {
  tar czf "$OUT/runs_logs.tgz" --exclude='*.pt' --exclude=tb "$LOGS" \
    $(ls -d runs/smoke_a runs/smoke_b runs/edge_v7_gpu runs/edge_v7s_gpu runs/edge_v7_gpu_mcn runs/edge_v7s_gpu_mcn 2>/dev/null)
}
t0=$(date +%s)

log "budget ${BUDGET}s; $(nproc) cores"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1 | tee -a "$OUT/gpu_train.log"
$PY -c "import torch, torchvision, timm, numpy, cv2; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'torchvision', torchvision.__version__, 'timm', timm.__version__, 'numpy', numpy.__version__)" 2>&1 | tee -a "$OUT/gpu_train.log"

# 1. caches (the spec in the configs must match what is rendered here)
$PY -m damcseg_core.cli.make_synthetic --out $CACHE_A --frames $FA --seed 2 \
  --format packed --workers 10 --no-progress > "$LOGS/cache_a.log" 2>&1 &
pa=$!
$PY -m damcseg_core.cli.make_synthetic --out $CACHE_B --frames $FB --seed 3 --depth mix \
  --lidar-fraction 0.5 --thermal realistic --format packed --workers 6 --no-progress > "$LOGS/cache_b.log" 2>&1 &
pb=$!
wait $pa && wait $pb || { log "cache rendering failed"; tail -20 "$LOGS"/cache_*.log; exit 1; }
log "caches ready after $(( $(date +%s) - t0 ))s"

train() {  # name config overrides...
  local name=$1 cfg=$2; shift 2
  $PY -m damcseg_core.cli.train --config "$cfg" --no-resume "$@" "${EXTRA[@]}" > "$LOGS/$name.log" 2>&1
}
rate() {  # steps/s of the last logged rows of a run's metrics.csv (the first rows hold the warm-up)
  $PY - "$1" <<'EOF'
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1] + "/metrics.csv")))
sec = [float(r["sec_per_step"]) for r in rows[1:]] or [float(rows[-1]["sec_per_step"])]
print(f"{1.0 / statistics.median(sec):.3f}")
EOF
}

# 2. smoke: the CUDA + AMP path, and the step rates under the same two-run load
VAL8="data.val=synthetic:frames=8,size=256x512,seed=1001"
train smoke_a config/train/edge_v7_gpu.yaml total_steps=$((MIN_STEPS < 40 ? MIN_STEPS : 40)) log_every=$((MIN_STEPS < 40 ? 1 : 10)) "$VAL8" out_dir=runs/smoke_a &
pa=$!
train smoke_b config/train/edge_v7s_gpu.yaml total_steps=$((MIN_STEPS < 40 ? MIN_STEPS : 40)) log_every=$((MIN_STEPS < 40 ? 1 : 10)) "$VAL8" out_dir=runs/smoke_b &
pb=$!
wait $pa; ra=$?; wait $pb; rb=$?
if [ $ra -ne 0 ] || [ $rb -ne 0 ]; then
  log "smoke failed (edge rc=$ra, fast rc=$rb)"; tail -30 "$LOGS/smoke_a.log" "$LOGS/smoke_b.log"; pack; exit 1
fi
rate_a=$(rate runs/smoke_a); rate_b=$(rate runs/smoke_b)
left=$(( BUDGET - ($(date +%s) - t0) + 150 ))  # the smoke and caches come out of the 150 s allowance
[ $left -gt $BUDGET ] && left=$BUDGET
# The first lease (2026-12-04) ran its main phase 1.2x over rate x budget (start-up, three
# validations) and the MCN stage at 0.7x the main step rate: 0.75 of the budget goes to steps.
steps_a=$($PY -c "print(max($MIN_STEPS, int($rate_a * $left * 0.75 / 10) * 10))")
steps_b=$($PY -c "print(max($MIN_STEPS, int($rate_b * $left * 0.75 / 10) * 10))")
log "smoke ok; rates edge ${rate_a} / fast ${rate_b} steps/s; main runs: ${left}s -> ${steps_a} / ${steps_b} steps"
grep -h "machine:" "$LOGS/smoke_a.log" | head -1 | tee -a "$OUT/gpu_train.log"

# 3. main runs (validation on seed 1001 three times)
train edge_v7 config/train/edge_v7_gpu.yaml total_steps=$steps_a val_every=$((steps_a / 3)) &
pa=$!
train edge_v7s config/train/edge_v7s_gpu.yaml total_steps=$steps_b val_every=$((steps_b / 3)) &
pb=$!
wait $pa; ra=$?; wait $pb; rb=$?
log "main runs done (edge rc=$ra, fast rc=$rb) after $(( $(date +%s) - t0 ))s"
pack

# 4. MCN stages
pids=()
[ $ra -eq 0 ] && { train edge_v7_mcn config/train/edge_v7_gpu_mcn.yaml total_steps=$((steps_a * 12 / 100)) & pids+=($!); }
[ $rb -eq 0 ] && { train edge_v7s_mcn config/train/edge_v7s_gpu_mcn.yaml total_steps=$((steps_b * 12 / 100)) & pids+=($!); }
for p in "${pids[@]}"; do wait "$p" || log "an MCN stage failed"; done
log "MCN stages done after $(( $(date +%s) - t0 ))s"

# 5. checkpoints (weights + config only) and logs
for run in edge_v7 edge_v7s; do
  d=runs/${run}_gpu
  [ -f "$d/last.pt" ] && $PY tools/ship_checkpoint.py "$d/last.pt" "$OUT/${run}_main.pt" >> "$OUT/gpu_train.log" 2>&1
  [ -f "${d}_mcn/last.pt" ] && $PY tools/ship_checkpoint.py "${d}_mcn/last.pt" "$OUT/${run}.pt" >> "$OUT/gpu_train.log" 2>&1
done
pack
log "done after $(( $(date +%s) - t0 ))s"
ls -la "$OUT" | tee -a "$OUT/gpu_train.log"
