#!/usr/bin/env bash
# Rebuilds img2text2img/pretrained/diffusion_flickr8k (flickr8k-diffusion): a latent diffusion generator on Flickr8k,
# the autoencoder (750 steps), then the UNet denoiser (4,500 steps), then 3,000 more denoiser steps from its shipped
# (fp16, EMA) weights with min-SNR-5 loss weighting and a fresh schedule; drawn with 25 DDIM steps at guidance 3.
# The first run followed a 6,000-step cosine schedule to step 3,000 and was then resumed with a 4,500-step one
# (to fit this machine's day); the calls below replay exactly that. Needs Flickr8k and the MobileNetV2 weights
# (the autoencoder's perceptual term). Wall time and scores it should reach: docs/TRAINING.md.
source "$(dirname "$0")/lib.sh"
R=$RUNS/flickr8k-diffusion
D=("$PY" "$ROOT/scripts/train_diffusion.py" --data flickr8k --threads 1)
step() { "$PY" -c "import json,sys; print(json.load(open(sys.argv[1])).get('step', 0))" "$R/run/denoiser/last/metrics.json" 2>/dev/null || echo 0; }
if [ ! -f "$R/run/denoiser/summary.json" ]; then
  resume=(); [ -d "$R/run/autoencoder" ] && resume=(--resume)
  if [ "$(step)" -lt 3000 ]; then "${D[@]}" --out "$R/run" "${resume[@]}" --steps 6000 --stop-at 3000; fi
  "${D[@]}" --out "$R/run" --resume --steps 4500
fi
once "$R/base" "$I2T" ship "$R/run/denoiser" --as "$R/base"
if [ ! -f "$R/finetune/denoiser/summary.json" ]; then
  resume=(); [ -d "$R/finetune" ] && resume=(--resume)
  "${D[@]}" --out "$R/finetune" "${resume[@]}" --init-from "$R/base" --steps 3000 --lr 2e-4 --warmup-steps 100 \
    --min-snr 5
fi
M=$(ship_as "$R/finetune/denoiser" diffusion_flickr8k)
once "$R/score.json" "$PY" "$ROOT/scripts/results_generator.py" --model "$M" --data flickr8k --steps 25 \
  --out "$R/score.json"
