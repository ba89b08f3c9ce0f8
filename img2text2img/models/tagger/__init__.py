"""The tagger family: config.py (network config, inference settings, presets), heads.py (CNN-RNN and BCE heads),
model.py (Tagger, load_tagger, tag)."""
from img2text2img.models.tagger.config import (
    HEADS,
    POOLS,
    TAGGERS,
    TaggerConfig,
    TaggerSettings,
    list_taggers,
    migrate_config,
    tagger_config,
)
from img2text2img.models.tagger.heads import HEAD_CLASSES, NEG, BCETagHead, RNNTagHead, order_mask
from img2text2img.models.tagger.model import Tagger, create_tagger, default_tagger_dir, load_tagger, tag

__all__ = ["HEADS", "HEAD_CLASSES", "NEG", "POOLS", "TAGGERS", "BCETagHead", "RNNTagHead", "Tagger", "TaggerConfig",
           "TaggerSettings", "create_tagger", "default_tagger_dir", "list_taggers", "load_tagger", "migrate_config",
           "order_mask", "tag", "tagger_config"]
