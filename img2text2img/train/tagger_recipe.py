"""How a tagger is trained, as one dataclass: `i2t train tagger` makes its options from these fields, so a training
setting is declared here once. Kept free of torch so that `i2t --help` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass

from img2text2img.config import option


@dataclass
class TaggerRecipe:
    """How a tagger is trained: each field is an `i2t train tagger` option."""

    epochs: int = option(30, "Passes over the training images.", min=1)
    max_steps: int | None = option(None, "Stop after this many steps (wins over --epochs).", min=1)
    batch_size: int = option(64, "Images per step.", min=1)
    lr: float = option(2e-3, "Peak learning rate (AdamW, cosine schedule).", min=0.0)
    weight_decay: float = option(1e-4, "AdamW weight decay.", min=0.0)
    warmup_steps: int = option(0, "Linear learning-rate warm-up steps.", min=0)
    patience: int | None = option(5, "Early stopping: validations without micro-F1 gain.", min=1)
    eval_every: int | None = option(None, "Steps between validations (default: each epoch).", min=1)
    val_images: int | None = option(None, "Validate on the first N val images.", min=1)
    seed: int = option(0, "Seed of the initialisation, data order and augmentation.")
    precision: str = option("auto", "auto (fp16 autocast on CUDA, fp32 on the CPU), fp32, or bf16.")
    tags: str = option("auto", "Tags: auto (tags.tsv if present, else from captions), file or captions.")
    max_tags: int = option(500, "Tag vocabulary: the N most frequent tags (tags.DEFAULT_MAX_TAGS).", min=1)
    aux_bce: float = option(0.0, "RNN head: weight of a per-tag BCE loss on the image term (faster start from a "
                                 "random CNN).", min=0.0)
    beam: int = option(3, "RNN head: beam width for validation, saved as the model's inference setting.", min=1)
    augment: str = option("", "Augment training pictures, comma-separated: flip (mirror half the time), rot90 (turn by "
                              "0/90/180/270), rotate[=15 degrees], shear[=10 degrees], zoom[=0.1], e.g. flip,rotate=20. "
                              "Tags stay true under each. Trains from images, not cached features: slower on a CPU.")
