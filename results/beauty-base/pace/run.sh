#!/usr/bin/env bash
# Five epochs of every method with all-position training on the eSASRec + seen-negatives base
# (results/beauty-base/README.md), seed 2020, one thread: validation NDCG@10 at epoch 5 against
# SASRec's (issue 21 target: >= 0.98x). The guided methods update importance at epoch 3
# (occlusion), so epochs 3-5 train their guided terms. A probe of pace, not a converged result.
# Usage: bash results/beauty-base/pace/run.sh OUT_DIR [METHOD ...]
set -euo pipefail
out=${1:?output directory}; shift
methods=${*:-sasrec cl4srec duorec ec4srec_ssl ec4srec_sl ec4srec}
base=(--dataset beauty --set train.threads=1 --set train.progress=off --set train.seed=2020
      --set train.objective=all_positions --set train.loss=sampled_softmax --set train.negatives=256
      --set train.seen_negatives=true --set model.num_layers=1 --set model.num_heads=1
      --set model.inner_size=64 --set model.dropout=0.2 --set model.attn_dropout=0.2
      --set model.item_dropout=0.2 --set model.norm=pre --set model.positions=from_end
      --set model.ffn_activation=relu --set model.init=xavier_normal --set train.adam_beta2=0.98
      --set train.batch_size=128 --set train.epochs=5 --set "method.update_epochs=[3]")
for m in $methods; do
  [ -f "$out/pace-$m/metrics.json" ] && continue
  ec4srec train "${base[@]}" --method "$m" --output "$out/pace-$m"
done
