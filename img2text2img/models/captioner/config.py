"""What a captioner is (`CaptionerConfig`, the network only), how it decodes (`CaptionSettings`, saved in the
checkpoint's `inference` block), the named configurations, and the migration of checkpoints that mixed the three.
"""
from __future__ import annotations

import typing
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from img2text2img.config import check_value, config_from_dict, option
from img2text2img.errors import I2TError
from img2text2img.registry import Registry


@dataclass
class CaptionerConfig:
    encoder: str = "mobilenet_v2"  # name for `create_encoder`
    decoder: str = "attention"  # lstm | blstm | attention
    feature_dim: int = 0  # D of the encoder features (filled in from the encoder / feature cache)
    vocab_size: int = 0  # filled in from the vocabulary
    embed_dim: int = 256  # word-embedding size (50 to initialise from the GloVe 50-d slice)
    hidden: int = 512  # LSTM hidden size
    attention_dim: int = 256  # attention MLP size (attention decoder)
    feature_proj: int = 512  # grid features are projected to this size once per image (attention decoder)
    # attention decoder: > 0 adds this many detected words as extra cells to attend to (see SoftAttentionDecoder)
    attribute_words: int = 0
    dropout: float = 0.5
    max_len: int = 20  # longest caption trained on and generated (words, without <start>/<end>)
    encoder_weights_sha256: str = ""  # fingerprint of the encoder weights the decoder was trained on
    store_encoder: bool = False  # random-init and fine-tuned encoders keep their weights in the checkpoint
    members: int = 1  # > 1: an ensemble of this many decoders, trained apart (`ensemble_captioners`)
    # a mixed ensemble: per member, the MEMBER_FIELDS where it differs from the fields above (e.g. {"decoder": "lstm"})
    member_overrides: tuple[dict, ...] = ()

    # options this version no longer has, at the value that means "off" (older checkpoints carry them)
    REMOVED: ClassVar[dict] = {"refine_layers": 0}

    def __post_init__(self) -> None:
        if not 0 <= self.attribute_words <= 64:
            raise I2TError(f"attribute_words must be between 0 and 64, not {self.attribute_words}")
        if self.attribute_words and self.decoder != "attention":
            raise I2TError("attribute_words needs the attention decoder")
        if self.members < 1:
            raise I2TError(f"members must be at least 1, not {self.members}")
        if self.member_overrides:
            if len(self.member_overrides) != self.members:
                raise I2TError(f"member_overrides has {len(self.member_overrides)} entries for {self.members} members")
            bad = sorted({k for o in self.member_overrides for k in o} - set(MEMBER_FIELDS))
            if bad:
                raise I2TError(f"member_overrides may set only {', '.join(MEMBER_FIELDS)}, not {', '.join(bad)}")
            hints = typing.get_type_hints(CaptionerConfig)
            for i, o in enumerate(self.member_overrides):  # each value typed and ranged like the field it replaces
                for k, v in o.items():
                    check_value("CaptionerConfig", f"member_overrides[{i}].{k}", hints[k], v)

    @property
    def uses_grid(self) -> bool:
        return any(c.decoder == "attention" for c in self.member_configs())

    def member_configs(self) -> list[CaptionerConfig]:
        """One single-decoder config per member (the config itself when it is not an ensemble)."""
        if self.members == 1:
            return [self]
        overrides = self.member_overrides or ({},) * self.members
        return [replace(self, members=1, member_overrides=(), **o) for o in overrides]


# The fields that shape one decoder's weights: a run started from another model (--init-from) keeps them.
NETWORK_FIELDS = ("decoder", "embed_dim", "hidden", "attention_dim", "feature_proj")
# Members of an ensemble may differ in these, and must share everything else that reaches the features (encoder, its
# weights, feature size) and the vocabulary.
MEMBER_FIELDS = (*NETWORK_FIELDS, "dropout")


@dataclass
class CaptionSettings:
    """How a captioner decodes when the caller does not say: chosen on the validation split for that model
    (scripts/tune_decoding.py), so that a default call decodes the way the model was scored."""

    beam_size: int = option(3, "Beam width (1 = greedy).", min=1, max=20)
    length_alpha: float = option(0.7, "Beam search ranks finished captions by logprob / length ** length_alpha.",
                                 min=0.0)
    # off for checkpoints that predate it, so their captions stay what they were (models/captioner/openvocab.py)
    open_vocab: bool = option(False, "Name objects the encoder's ImageNet head is sure of when the caption lacks "
                              "them (constrained beam search).")
    open_vocab_threshold: float = option(0.6, "Detector confidence a word needs to be forced into the caption.",
                                         min=0.0, max=1.0)
    open_vocab_words: int = option(1, "At most this many detected words forced into one caption.", min=1, max=2)
    say_once: bool = option(False, "Say each content word (colours aside) at most once: no 'a man in a blue shirt "
                            "is wearing a blue shirt'.")

    REMOVED: ClassVar[dict] = {"no_repeat_ngram": 0, "mirror_average": False}


# Keys older checkpoints kept in the network config: the decoding ones now live in CaptionSettings; the training
# ones belong to the recipe that trained the model and say nothing about the network, so they are dropped.
INFERENCE_KEYS = ("beam_size", "length_alpha", "no_repeat_ngram", "mirror_average")
TRAINING_KEYS = ("label_smoothing", "alpha_c", "attribute_weight", "encoder_trainable_blocks")


def migrate_config(config: dict, inference: dict) -> tuple[CaptionerConfig, CaptionSettings]:
    """A checkpoint's `config` and `inference` blocks -> (network config, settings), for old and new checkpoints."""
    net = {k: v for k, v in config.items() if k not in TRAINING_KEYS and k not in INFERENCE_KEYS}
    settings = {**{k: config[k] for k in INFERENCE_KEYS if k in config}, **inference}
    if net.get("member_overrides"):
        net["member_overrides"] = [{k: v for k, v in o.items() if k not in TRAINING_KEYS}
                                   for o in net["member_overrides"]]
    return config_from_dict(CaptionerConfig, net), config_from_dict(CaptionSettings, settings)


# ---------------------------------------------------------------------------------------------------------------
# Named configurations: "ENCODER+DECODER" for the combinations that ship or are documented, and tiny test presets.

CAPTIONERS: Registry[Callable[[], CaptionerConfig]] = Registry("captioner")

LSTM = {"decoder": "lstm", "embed_dim": 256, "hidden": 512, "dropout": 0.5}
BLSTM = {"decoder": "blstm", "embed_dim": 256, "hidden": 256, "dropout": 0.5}
ATTENTION = {"decoder": "attention", "embed_dim": 256, "hidden": 512, "attention_dim": 256, "feature_proj": 512,
             "dropout": 0.5}
# small decoders for the shapes set, tiny ones for tests
LSTM_SMALL = {"decoder": "lstm", "embed_dim": 64, "hidden": 192, "dropout": 0.1, "max_len": 20}
ATTENTION_SMALL = {"decoder": "attention", "embed_dim": 64, "hidden": 192, "attention_dim": 64, "feature_proj": 96,
                   "dropout": 0.1, "max_len": 20}
LSTM_TINY = {"decoder": "lstm", "embed_dim": 32, "hidden": 64, "dropout": 0.1, "max_len": 16}
BLSTM_TINY = {"decoder": "blstm", "embed_dim": 32, "hidden": 48, "dropout": 0.1, "max_len": 16}
ATTENTION_TINY = {"decoder": "attention", "embed_dim": 32, "hidden": 64, "attention_dim": 32, "feature_proj": 64,
                  "dropout": 0.1, "max_len": 16}


@CAPTIONERS.register("mobilenet_v2+lstm")
def mobilenet_v2_lstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="mobilenet_v2", **LSTM)


@CAPTIONERS.register("mobilenet_v2+blstm")
def mobilenet_v2_blstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="mobilenet_v2", **BLSTM)


@CAPTIONERS.register("mobilenet_v2+attention")
def mobilenet_v2_attention() -> CaptionerConfig:
    return CaptionerConfig(encoder="mobilenet_v2", **ATTENTION)


@CAPTIONERS.register("efficientnet_lite0+lstm")
def efficientnet_lite0_lstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="efficientnet_lite0", **LSTM)


@CAPTIONERS.register("efficientnet_lite0+blstm")
def efficientnet_lite0_blstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="efficientnet_lite0", **BLSTM)


@CAPTIONERS.register("efficientnet_lite0+attention")
def efficientnet_lite0_attention() -> CaptionerConfig:
    """The shipped Flickr8k captioner's network (it adds `attribute_words=10` when fine-tuned)."""
    return CaptionerConfig(encoder="efficientnet_lite0", **ATTENTION)


@CAPTIONERS.register("mobilenet_v3_small+lstm")
def mobilenet_v3_small_lstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="mobilenet_v3_small", **LSTM)


@CAPTIONERS.register("mobilenet_v3_small+blstm")
def mobilenet_v3_small_blstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="mobilenet_v3_small", **BLSTM)


@CAPTIONERS.register("mobilenet_v3_small+attention")
def mobilenet_v3_small_attention() -> CaptionerConfig:
    return CaptionerConfig(encoder="mobilenet_v3_small", **ATTENTION)


@CAPTIONERS.register("inception_v3+lstm")
def inception_v3_lstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="inception_v3", **LSTM)


@CAPTIONERS.register("inception_v3+attention")
def inception_v3_attention() -> CaptionerConfig:
    return CaptionerConfig(encoder="inception_v3", **ATTENTION)


@CAPTIONERS.register("googlenet+lstm")
def googlenet_lstm() -> CaptionerConfig:
    return CaptionerConfig(encoder="googlenet", **LSTM)


@CAPTIONERS.register("googlenet+attention")
def googlenet_attention() -> CaptionerConfig:
    return CaptionerConfig(encoder="googlenet", **ATTENTION)


@CAPTIONERS.register("small_cnn+lstm-small")
def small_cnn_lstm_small() -> CaptionerConfig:
    return CaptionerConfig(encoder="small_cnn", **LSTM_SMALL)


@CAPTIONERS.register("small_cnn+attention-small")
def small_cnn_attention_small() -> CaptionerConfig:
    """The shipped shapes captioner's network."""
    return CaptionerConfig(encoder="small_cnn", **ATTENTION_SMALL)


@CAPTIONERS.register("small_cnn+lstm-tiny")
def small_cnn_lstm_tiny() -> CaptionerConfig:
    return CaptionerConfig(encoder="small_cnn", **LSTM_TINY)


@CAPTIONERS.register("small_cnn+blstm-tiny")
def small_cnn_blstm_tiny() -> CaptionerConfig:
    return CaptionerConfig(encoder="small_cnn", **BLSTM_TINY)


@CAPTIONERS.register("small_cnn+attention-tiny")
def small_cnn_attention_tiny() -> CaptionerConfig:
    return CaptionerConfig(encoder="small_cnn", **ATTENTION_TINY)


@CAPTIONERS.register("mobilenet_v2+lstm-tiny")
def mobilenet_v2_lstm_tiny() -> CaptionerConfig:
    return CaptionerConfig(encoder="mobilenet_v2", **LSTM_TINY)


@CAPTIONERS.register("efficientnet_lite0+attention-tiny")
def efficientnet_lite0_attention_tiny() -> CaptionerConfig:
    return CaptionerConfig(encoder="efficientnet_lite0", **ATTENTION_TINY)


def list_captioners() -> list[str]:
    return CAPTIONERS.names()


def captioner_config(name: str, **overrides) -> CaptionerConfig:
    """Named configuration (e.g. "mobilenet_v2+attention") with field overrides."""
    cfg = CAPTIONERS.get(name)()
    try:
        return replace(cfg, **overrides)
    except TypeError as e:
        raise I2TError(f"captioner config: {e}") from None
