"""Image captioners: an image encoder + one of three word decoders (LSTM, merge BLSTM, soft attention), with greedy
and beam-search decoding, ensembles and weight averaging.

Modules, one concept each: `config` (network config, decoding settings, named configurations), `decoders`,
`fast_linear` (the few-rows matrix products searches use), `search` (greedy, beam, sampling), `model` (`Captioner`),
`api` (loading, captioning, combining).
"""
from img2text2img.models.captioner.api import (
    average_captioners,
    caption,
    create_captioner,
    default_captioner_dir,
    ensemble_captioners,
    load_captioner,
    load_members,
    timed_caption,
)
from img2text2img.models.captioner.config import (
    CAPTIONERS,
    MEMBER_FIELDS,
    NETWORK_FIELDS,
    CaptionerConfig,
    CaptionSettings,
    captioner_config,
    list_captioners,
    migrate_config,
)
from img2text2img.models.captioner.decoders import (
    DECODERS,
    EnsembleDecoder,
    MergeBLSTMDecoder,
    ShowTellDecoder,
    SoftAttentionDecoder,
)
from img2text2img.models.captioner.fast_linear import decode_linear, decode_lstm_step
from img2text2img.models.captioner.model import KIND, Captioner, CaptionResult
from img2text2img.models.captioner.search import beam_search, greedy_search, sample_search

__all__ = [
    "CAPTIONERS", "DECODERS", "KIND", "MEMBER_FIELDS", "NETWORK_FIELDS", "CaptionResult", "CaptionSettings",
    "Captioner", "CaptionerConfig", "EnsembleDecoder", "MergeBLSTMDecoder", "ShowTellDecoder", "SoftAttentionDecoder",
    "average_captioners", "beam_search", "caption", "captioner_config", "create_captioner", "decode_linear",
    "decode_lstm_step", "default_captioner_dir", "ensemble_captioners", "greedy_search", "list_captioners",
    "load_captioner", "load_members", "migrate_config", "sample_search", "timed_caption",
]
