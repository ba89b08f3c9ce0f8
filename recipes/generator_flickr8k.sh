#!/usr/bin/env bash
# Rebuilds img2text2img/pretrained/generator_flickr8k: a conditional VAE on Flickr8k at 64x64, then a learned prior,
# then a perceptual term in MobileNetV3-small features; drawn at guidance 2.5 (chosen on validation).
# Needs Flickr8k and the MobileNetV3-small weights. Wall time and scores it should reach: docs/TRAINING.md.
source "$(dirname "$0")/lib.sh"
R=$RUNS/generator_flickr8k
train "$R/vae" train generator --kind vae --data flickr8k --steps 3000 --threads 1
train "$R/prior" train generator --kind vae --prior learned --data flickr8k --init-from "$R/vae" --steps 1500 \
  --threads 1
train "$R/perceptual" train generator --kind vae --prior learned --data flickr8k --init-from "$R/prior" --steps 3000 \
  --perceptual mobilenet_v3_small --perceptual-size 112 --perceptual-weight 0.3 --threads 1
M=$(ship_as "$R/perceptual/last" generator_flickr8k --set guidance=2.5)
once "$R/score.json" "$PY" "$ROOT/scripts/results_generator.py" --model "$M" --data flickr8k --out "$R/score.json"
