"""Datasets: the shared caption-folder layout (Flickr8k, shapes), image loading and augmentation."""
from img2text2img.data.captions import CaptionDataset, load_dataset, read_caption_folder
from img2text2img.data.images import list_images, load_image

__all__ = ["CaptionDataset", "list_images", "load_dataset", "load_image", "read_caption_folder"]
