#!/bin/bash
# Edge v6 after its main run (config/train/edge_v6.yaml), in order:
#   bash docs/edge_v6/post_train.sh threshold  # score threshold on validation seed 1001 (-> edge_v6_mcn.yaml)
#   damcseg-train --config config/train/edge_v6_mcn.yaml
#   bash docs/edge_v6/post_train.sh val        # candidate checkpoint, checks, v4 vs v6 on seed 1001 (the decision)
#   SHIP=runs/edge_v6_mcn/candidate_nolocal.pt bash docs/edge_v6/post_train.sh heldout
#       # the variant chosen on validation, on seeds 2024, 2025, 2024 realistic (reporting only)
set -eo pipefail
cd "$(dirname "$0")/../.." && source tools/env.sh && source tools/post_train_lib.sh
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
R=runs/edge_v6
M=runs/edge_v6_mcn
CK=$M/candidate.pt
SHIP=${SHIP:-$CK}  # heldout: the variant chosen on validation (candidate.pt or candidate_nolocal.pt)
V4=${V4:-runs/edge_v4_shipped.pt}  # edge v4, the shipped checkpoint before v6 (from git)
[ -f "$V4" ] || git show 888c62b:damcseg_core/weights/damcseg_edge.pt > "$V4"
S2024="synthetic:frames=48,size=256x512,seed=2024"
S2025="synthetic:frames=200,size=256x512,seed=2025"
case "${1:-val}" in
  threshold)
    python tools/choose_score_threshold.py $R/best.pt --data $VAL --out $R/threshold.json
    python -c "import json; print('threshold', json.load(open('$R/threshold.json'))['chosen']['threshold'])"
    ;;
  val)
    python tools/ship_checkpoint.py $M/last.pt $CK
    # The MCN stage is frozen_eval: everything but the MCN / completion flag must equal v6's best.pt.
    only_mcn_changed $R/best.pt $CK
    python tools/compare_checkpoints.py --data $VAL $V4 $CK --out $M/compare_val1001.json | tee $M/compare_val1001.log
    eval_set $M/eval_val1001 "$VAL" $CK
    eval_set $M/eval_val1001real "$VAL,$REAL" $CK
    # The local ROI path, trained on ground-truth boxes, hurt v5 on predicted ones: the same
    # weights with it off (refinement.use_local), paired against it on validation.
    python tools/ship_checkpoint.py $CK $M/candidate_nolocal.pt --set refinement.use_local=false
    python tools/compare_checkpoints.py --data $VAL $CK $M/candidate_nolocal.pt --out $M/local_off_val1001.json \
       | tee $M/local_off_val1001.log
    ;;
  heldout)
    python tools/compare_checkpoints.py --data $S2024 $V4 $SHIP --out $M/compare_2024.json | tee $M/compare_2024.log
    python tools/compare_checkpoints.py --data $S2025 $V4 $SHIP --out $M/compare_2025.json | tee $M/compare_2025.log
    eval_set $M/eval_2024 $S2024 $SHIP
    eval_set $M/eval_2025 $S2025 $SHIP
    eval_set $M/eval_2024real "$S2024,$REAL" $SHIP
    python tools/detection_eval.py --checkpoint $V4 --checkpoint $SHIP \
       --data $S2024 --data $S2025 --data "$S2024,$REAL" --out $M/detection_eval.json > $M/detection_eval.log 2>&1
    date
    # The accuracy-at-budget peers, scored with v6 as "ours" (the peers are not retrained); needs
    # their runs under runs/peers/ (benchmarks/accuracy_at_budget.py trains them).
    for peer in lraspp_stacked fcos_rgb; do
      if [ -d runs/peers/$peer ]; then
        python benchmarks/accuracy_at_budget.py --peer $peer --eval-only --out runs/peers/$peer --ours $SHIP \
           --result $M/accuracy_at_budget_$peer.json > $M/accuracy_at_budget_$peer.log 2>&1
        tail -4 $M/accuracy_at_budget_$peer.log
      else
        echo "no runs/peers/$peer: peer not scored"
      fi
    done
    ;;
  *)
    echo "usage: $0 threshold|val|heldout" >&2
    exit 2
    ;;
esac
echo done
