#!/usr/bin/env bash
# Rebuilds img2text2img/pretrained/tagger (EfficientNet-Lite0 features + a linear BCE head, Flickr8k).
# Needs Flickr8k and the EfficientNet-Lite0 weights (README: where data and weights come from).
# Wall time and the scores it should reach: docs/TRAINING.md. Usage: bash recipes/tagger.sh
source "$(dirname "$0")/lib.sh"
R=$RUNS/tagger
train "$R/run" train tagger --model efficientnet_lite0+bce --data flickr8k --epochs 12 --batch-size 64 --lr 2e-3 \
  --weight-decay 1e-4 --warmup-steps 50 --patience 4 --val-images 300 --threads 1 --device cpu
M=$(ship_as "$R/run" tagger)
once "$R/test.json" "$I2T" eval tagger --model "$M" --data flickr8k --split test --out "$R/test.json"
