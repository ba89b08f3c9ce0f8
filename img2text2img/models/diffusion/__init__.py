"""Latent diffusion text-to-image: an autoencoder, a text-conditioned UNet over its latent, DDIM sampling."""
from img2text2img.models.diffusion.config import PRESETS, DiffusionConfig, DiffusionSettings, diffusion_config
from img2text2img.models.diffusion.model import DiffusionGenerator, empty_prompt_ids

__all__ = ["PRESETS", "DiffusionConfig", "DiffusionGenerator", "DiffusionSettings", "diffusion_config",
           "empty_prompt_ids"]
