#!/usr/bin/env bash
# The guidance diagnostics of results/beauty-ours/README.md ("Why the guidance barely moves
# CL4SRec"). CKPT holds checkpoint.pt copies of the seed-2021/2022 DuoRec and seed-2022 CL4SRec
# runs taken after their epoch 24 (the state an EC4SRec run's first importance update, at the
# start of epoch 25, explains; EC4SRec's warm-up loss is these two methods' terms together).
# Run from the repository root.
set -euo pipefail
CKPT=${CKPT:-~/diag}
OUT=results/beauty-ours/diagnostics
ec4srec diagnose --dataset beauty --data-dir ../shared/data --output $OUT/beauty-room.json
for r in duorec-s2021 duorec-s2022 cl4srec-s2022; do
  for t in predicted target; do
    ec4srec diagnose --checkpoint $CKPT/ours-beauty-$r-e24.pt --data-dir ../shared/data \
      --rows 5000 --set method.explain_target=$t --output $OUT/$r-e24-$t.json
  done
done
for x in saliency integrated_gradients attention; do
  ec4srec diagnose --checkpoint $CKPT/ours-beauty-duorec-s2021-e24.pt --data-dir ../shared/data \
    --rows 5000 --set method.explainer=$x --output $OUT/duorec-s2021-e24-$x.json
done
# EC4SRec's own warm-up (added later in session 10): the state after epoch 24 of the seed-2020
# and seed-2021 guided runs (warmup.pt of ours-beauty-ec4srec-clp-slp-s2020, and the epoch-24
# checkpoint of ours-beauty-ec4srec_sl-s2021: every variant of a seed shares this warm-up).
for s in 2020 2021; do
  for t in predicted target; do
    ec4srec diagnose --checkpoint $CKPT/ours-beauty-ec4srec-s$s-warmup.pt --data-dir ../shared/data \
      --rows 5000 --set method.explain_target=$t --output $OUT/ec4srec-s$s-warmup-$t.json
  done
done
