#!/usr/bin/env bash
# Rebuilds img2text2img/pretrained/generator (the shapes scene writer) on a fresh 40,000-picture shapes set (seed 1,
# so none of its pictures is a test picture of the default set), drawn at temperature 0.5 (chosen on validation).
# Wall time and the scores it should reach: docs/TRAINING.md. Usage: bash recipes/generator.sh
source "$(dirname "$0")/lib.sh"
R=$RUNS/generator
once "$R/shapes40k" "$I2T" data shapes --n 40000 --seed 1 --out "$R/shapes40k"
train "$R/run" train generator --kind scene --data shapes --data-dir "$R/shapes40k" --steps 5000 --batch-size 64 \
  --lr 1e-3 --checkpoint-every 1000 --threads 2
M=$(ship_as "$R/run/last" generator --set temperature=0.5)
for seed in 0 1 2; do
  once "$R/roundtrip-seed$seed" "$I2T" roundtrip-eval --data shapes --split test --limit 200 --encoder none \
    --generator "$M" --seed "$seed" --out "$R/roundtrip-seed$seed"
done
