"""The latent GAN: a text-conditional GAN drawing in the latent space of the diffusion model's autoencoder."""
from img2text2img.models.gan.config import LatentGANConfig, latent_gan_config, latent_gan_presets
from img2text2img.models.gan.model import LatentDiscriminator, LatentGAN

__all__ = ["LatentDiscriminator", "LatentGAN", "LatentGANConfig", "latent_gan_config", "latent_gan_presets"]
