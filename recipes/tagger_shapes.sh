#!/usr/bin/env bash
# Rebuilds img2text2img/pretrained/tagger_shapes (small_cnn + RNN tag-sequence head, trained end to end on shapes).
# Wall time and the scores it should reach: docs/TRAINING.md. Usage: bash recipes/tagger_shapes.sh
source "$(dirname "$0")/lib.sh"
R=$RUNS/tagger_shapes
train "$R/run" train tagger --model small_cnn+rnn-tiny --data shapes --max-steps 3000 --batch-size 32 --lr 3e-3 \
  --eval-every 250 --val-images 300 --patience 8 --aux-bce 1.0 --beam 2 --threads 1 --device cpu
M=$(ship_as "$R/run" tagger_shapes)
once "$R/test.json" "$I2T" eval tagger --model "$M" --data shapes --split test --out "$R/test.json"
