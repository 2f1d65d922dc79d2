#!/bin/bash
# Edge v6.3 (issue #16): v6.2 as shipped plus a depth image completer (completion.depth_image = 64),
# trained on whole frames inside the frozen v6.2 network. Every v6.2 weight stays bit-identical.
# (python -m damcseg_core.cli.train_depth is the damcseg-train-depth command.)
#   stage 1: pixel loss (log-depth L1 + validity), 2000 steps of batch 4
#   stage 2: + the depth encoder's feature-matching term (weight 2), 1000 steps at lr 1e-3
# Weight 2 was chosen on validation seed 1001 against 0 (stage 1 alone) and 6 (docs/edge_v6_3/README.md).
#   bash docs/edge_v6_3/train.sh            # ~20 min on 2 cores; resumes if interrupted
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh
R=${R:-runs/edge_v6_3}
BASE=${BASE:-runs/edge_v6_2_shipped.pt}  # edge v6.2 as shipped
[ -f "$BASE" ] || git show 7acf3fb:damcseg_core/weights/damcseg_edge.pt > "$BASE"
DATA=(
  "synthetic:frames=4000,size=256x512,seed=2,cache=runs/cache/synthetic_f4000_256x512_s2"
  "synthetic:frames=2000,size=256x512,seed=3,depth=mix,lidar_fraction=0.5,thermal=realistic,cache=runs/cache/real_f2000_s3"
)
python -m damcseg_core.cli.train_depth --init "$BASE" --data "${DATA[@]}" --out "$R/stage1.pt" --steps 2000 --lr 2e-3
python -m damcseg_core.cli.train_depth --init "$R/stage1.pt" --data "${DATA[@]}" --out "$R/edge_v6_3.pt" --steps 1000 --lr 1e-3 \
  --feature-weight 2
