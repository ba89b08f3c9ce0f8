"""How a captioner is trained, as one dataclass: `i2t train captioner` makes its options from these fields, so a
training setting is declared here once. Kept free of torch so that `i2t --help` stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass

from img2text2img.config import option


@dataclass
class CaptionerRecipe:
    """How a captioner is trained: the network's name and the few network choices a run makes, the losses, the
    schedule and the validation. Inputs (data, --init-from) and where the run goes are the command's own."""

    model: str = option("mobilenet_v2+attention", "Registry name of a fresh run's network (e.g. "
                        "efficientnet_lite0+attention, small_cnn+lstm-tiny); a run from --init-from keeps its start's.")
    min_count: int = option(5, "Words seen fewer times in the training captions become <unk> (a fresh run only).",
                            min=1)
    glove: bool = option(False, "Initialise word embeddings from GloVe (sets the 50-d embedding; a fresh run only).")
    dropout: float | None = option(None, "Override the network's dropout.", min=0.0, max=1.0)
    attribute_words: int | None = option(
        None, "attention decoder: also attend to the N words a detector head finds most likely in the photo's "
              "captions (0: off). Can be added to an --init-from model; its new weights start untrained.",
        min=0, max=64)
    encoder_trainable_blocks: int = option(
        0, "Fine-tune the pretrained encoder's last N blocks with the decoder (EfficientNet-Lite0: 2 = head conv + "
           "BatchNorm, 3 adds the last stage). Trains on photos, not cached features, and stores the encoder in the "
           "checkpoint.", min=0)
    augment: str = option("", "Augment training pictures (a run whose encoder runs on every batch: small_cnn, or "
                          "--encoder-trainable-blocks N): flip, rot90, rotate[=15], shear[=10], zoom[=0.1], comma-"
                          "separated. A caption naming left/right is never mirrored, one naming a direction never "
                          "turned.")
    exclude_words: str = option("", "Drop every training caption that mentions one of these comma-separated words "
                                "(or its plural), and leave them out of a fresh vocabulary: the held-out objects of "
                                "novel-object captioning (DCC).")
    label_smoothing: float = option(0.0, "Label smoothing of the word cross-entropy.", min=0.0, max=1.0)
    alpha_c: float = option(1.0, "Weight of the attention decoder's doubly stochastic regulariser "
                            "(each grid cell attended about once over a caption).", min=0.0)
    attribute_weight: float = option(0.02, "Weight of the word detector's loss (with --attribute-words).", min=0.0)
    group_images: bool = option(False, "A batch is --batch-size images with all their captions, so each image's "
                                "features are projected once, not once per caption: faster attention training.")
    scst: bool = option(False, "Self-critical training on CIDEr-D instead of cross-entropy (needs --init-from; use a "
                        "small --lr such as 5e-5).")
    scst_samples: int = option(5, "Captions sampled per image with --scst; each one's baseline is the mean reward "
                               "of the others.", min=2)
    epochs: int = option(8, "Passes over the training captions.", min=1)
    max_steps: int | None = option(None, "Stop after this many steps (wins over --epochs).", min=1)
    batch_size: int = option(64, "Captions per step (images per step with --group-images or --scst).", min=1)
    lr: float = option(1e-3, "Peak learning rate (AdamW, cosine schedule).", min=0.0)
    warmup_steps: int = option(0, "Steps of linear learning-rate warm-up before the cosine schedule.", min=0)
    weight_decay: float = option(0.0, "AdamW weight decay.", min=0.0)
    grad_clip: float = option(5.0, "Clip the gradient norm to this (0: off).", min=0.0)
    patience: int | None = option(3, "Early stopping: evaluations without BLEU-4 gain.", min=1)
    val_images: int | None = option(None, "Validation BLEU on the first N val images (default: all).", min=1)
    eval_every: int | None = option(None, "Steps between validations (default: each epoch).", min=1)
    eval_beam: int = option(1, "Beam width of the validation BLEU during training (1 = greedy, fast).", min=1)
    seed: int = option(0, "Random seed (weights, data order, dropout, samples).")
    precision: str = option("auto", "auto (fp16 autocast on CUDA, fp32 on the CPU), fp32, or bf16 (bf16 autocast: "
                            "much faster on CPUs with bf16 matrix units, slower on others).")
