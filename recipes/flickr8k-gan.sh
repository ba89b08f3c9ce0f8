#!/usr/bin/env bash
# Trains the text-conditional GAN of issue #18 on Flickr8k as a latent GAN: a DF-GAN-style generator (sentence +
# noise fused into every block) draws 16x16x4 latents of the diffusion model's frozen autoencoder (#17), whose
# decoder makes the 64x64 picture and ships inside the GAN's folder. The discriminator judges latents (3.5x cheaper
# per step than judging decoded pictures here): hinge loss, matching-aware with MA-GP, spectral norm, DiffAugment
# translation + cutout on latents, D at 2x the generator's lr, Adam betas (0, 0.9), an EMA of the generator (what
# is saved), a mode-seeking term and the collapse watch (diversity.jsonl; stops below 0.1 of real photos').
# 44 min on 1 thread (2-CPU EPYC, shared; 2,619 s). Resumable: run it again after a cut. Needs Flickr8k, the MobileNetV3-small
# weights, and AE: a diffusion run's autoencoder checkpoint (`i2t train diffusion` writes OUT/autoencoder/best).
source "$(dirname "$0")/lib.sh"
R=$RUNS/flickr8k_gan
AE=${AE:?set AE to a diffusion run\'s autoencoder checkpoint, e.g. runs/diffusion-flickr8k/autoencoder/best}
train "$R/gan" train generator --kind latent-gan --autoencoder "$AE" --data flickr8k --steps 8000 --batch-size 32 \
  --lr 2e-4 --d-lr 4e-4 --ema 0.999 --gp-weight 2 --mode-seeking 1 --min-diversity 0.1 --checkpoint-every 500 \
  --threads 1
M=$(ship_as "$R/gan/last" flickr8k-gan)
once "$R/score.json" "$PY" "$ROOT/scripts/results_generator.py" --model "$M" --data flickr8k --out "$R/score.json"
