#!/bin/bash
# After runs/edge_v3 finishes: threshold on the val seed, candidate, held-out evals (v2 beside v3).
set -eo pipefail
cd /work/main && source tools/env.sh
R=runs/edge_v3
CK=${1:-$R/best.pt}
V2=runs/edge_v2_shipped.pt
REAL="depth=mix,lidar_fraction=0.5,thermal=realistic"
python tools/choose_score_threshold.py $CK --data synthetic:frames=48,size=256x512,seed=1001 --out $R/threshold.json
T=$(python -c "import json;print(json.load(open('$R/threshold.json'))['chosen']['threshold'])")
echo "threshold $T"
python tools/ship_checkpoint.py $CK $R/candidate.pt --set detection.score_threshold=$T
date
python tools/detection_eval.py --checkpoint $V2 --checkpoint $R/candidate.pt \
   --data synthetic:frames=48,size=256x512,seed=2024 --data synthetic:frames=200,size=256x512,seed=2025 \
   --data synthetic:frames=48,size=256x512,seed=2024,$REAL \
   --out $R/detection_eval.json > $R/detection_eval.log 2>&1
date
for spec in "2024 synthetic:frames=48,size=256x512,seed=2024" "2025 synthetic:frames=200,size=256x512,seed=2025" \
            "2024real synthetic:frames=48,size=256x512,seed=2024,$REAL"; do
  set -- $spec
  damcseg-eval --checkpoint $R/candidate.pt --data $2 --protocol completion --bootstrap 500 --no-progress \
     --out $R/eval_$1 > $R/eval_$1.log 2>&1
  date
done
# The old checkpoint on the realistic-sensor held-out set (#16: the gain must not be a change of benchmark).
damcseg-eval --checkpoint $V2 --data synthetic:frames=48,size=256x512,seed=2024,$REAL --protocol completion \
   --bootstrap 500 --no-progress --out $R/eval_2024real_v2 > $R/eval_2024real_v2.log 2>&1
date
echo done
