"""Datasets: the caption corpus in memory, the formats it is read from, image loading and augmentation."""
from img2text2img.data.captions import CaptionDataset, read_caption_folder
from img2text2img.data.images import list_images, load_image
from img2text2img.data.load import DataWarning, load_dataset

__all__ = ["CaptionDataset", "DataWarning", "list_images", "load_dataset", "load_image", "read_caption_folder"]
