#!/usr/bin/env bash
# Rebuilds img2text2img/pretrained/captioner_shapes (small_cnn + soft attention, trained end to end on shapes).
# Wall time and the scores it should reach: docs/TRAINING.md. Usage: bash recipes/captioner_shapes.sh
source "$(dirname "$0")/lib.sh"
R=$RUNS/captioner_shapes
train "$R/run" train captioner --model small_cnn+attention-small --data shapes --max-steps 10000 --batch-size 32 \
  --lr 3e-3 --min-count 1 --eval-every 1000 --val-images 200 --patience 10 --threads 1 --seed 1
M=$(ship_as "$R/run" captioner_shapes)
once "$R/test.json" "$I2T" eval captioner --model "$M" --data shapes --split test --out "$R/test.json"
