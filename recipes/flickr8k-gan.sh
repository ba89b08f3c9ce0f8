#!/usr/bin/env bash
# Trains the text-conditional GAN of issue #18 on Flickr8k as a latent GAN: a DF-GAN-style generator (sentence +
# noise fused into every block) draws 16x16x4 latents of the diffusion model's frozen autoencoder (#17), whose
# decoder makes the 64x64 picture and ships inside the GAN's folder. The discriminator judges latents (3.5x cheaper
# per step than judging decoded pictures here): hinge loss, matching-aware with MA-GP, spectral norm, DiffAugment
# translation + cutout on latents, D at 2x the generator's lr, Adam betas (0, 0.9), an EMA of the generator (what
# is saved), a mode-seeking term and the collapse watch (diversity.jsonl; stops below 0.1 of real photos').
# 44 min on 1 thread (2-CPU EPYC, shared; 2,619 s). Resumable: run it again after a cut. Needs Flickr8k, the MobileNetV3-small
# and MobileNetV2 weights. AE: the autoencoder it draws in; by default stage 1 of recipes/flickr8k-diffusion.sh (the
# same run folder, so the two recipes share it; 28 min on 1 thread when it is not there yet).
source "$(dirname "$0")/lib.sh"
R=$RUNS/flickr8k_gan
DR=$RUNS/flickr8k-diffusion/run
AE=${AE:-$DR/autoencoder/best}
if [ ! -f "$AE/config.json" ]; then
  resume=(); [ -d "$DR/autoencoder" ] && resume=(--resume)
  "$PY" "$ROOT/scripts/train_diffusion.py" --data flickr8k --out "$DR" --threads 1 --steps 6000 --stop-at 0 "${resume[@]}"
fi
train "$R/gan" train generator --kind latent-gan --autoencoder "$AE" --data flickr8k --steps 8000 --batch-size 32 \
  --lr 2e-4 --d-lr 4e-4 --ema 0.999 --gp-weight 2 --mode-seeking 1 --min-diversity 0.1 --checkpoint-every 500 \
  --threads 1
M=$(ship_as "$R/gan/last" flickr8k-gan)
once "$R/score.json" "$PY" "$ROOT/scripts/results_generator.py" --model "$M" --data flickr8k --out "$R/score.json"
