"""The captioner: an image encoder, one decoder (or an ensemble of them) and the vocabulary, with its decoding
settings.

Training mostly runs on cached encoder features (see `img2text2img.features`), so a checkpoint stores only the
decoder, the vocabulary and the encoder's name and weights fingerprint; the encoder is rebuilt through
`create_encoder` at load time. Encoders that cannot be rebuilt from a pretrained file (random-init `small_cnn`,
fine-tuned ones) are stored in the checkpoint.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from img2text2img.checkpoint import save_checkpoint
from img2text2img.config import config_to_dict
from img2text2img.data.images import prepare_image
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.models.captioner.config import CaptionerConfig, CaptionSettings, migrate_config
from img2text2img.models.captioner.decoders import DECODERS, EnsembleDecoder
from img2text2img.models.captioner.openvocab import OpenVocab
from img2text2img.models.captioner.search import beam_search, greedy_search
from img2text2img.models.encoders import create_encoder
from img2text2img.models.encoders.int8 import QuantizedEncoder
from img2text2img.pipeline import encode_ahead
from img2text2img.tags import candidate_words, said_once
from img2text2img.vocab import PAD_ID, SPECIALS, Vocabulary, pad_batch

KIND = "captioner"


@dataclass
class CaptionResult:
    text: str
    tokens: list[str]
    logprob: float  # sum of token log-probabilities, <end> included


class Captioner(nn.Module):
    """Decoder + vocabulary (+ the encoder, created lazily for captioning photos)."""

    def __init__(self, config: CaptionerConfig, vocab: Vocabulary, settings: CaptionSettings | None = None):
        super().__init__()
        if config.vocab_size != len(vocab):
            raise I2TError(f"captioner config has vocab_size {config.vocab_size} but the vocabulary has {len(vocab)}")
        if config.feature_dim <= 0:
            raise I2TError("captioner config needs feature_dim (the encoder's feature size)")
        self.config = config
        self.settings = settings or CaptionSettings()
        self.vocab = vocab
        built = [DECODERS.get(c.decoder)(c) for c in config.member_configs()]
        if any(c.attribute_words for c in config.member_configs()):
            allowed = torch.tensor([i >= len(SPECIALS) and candidate_words(w) == [w] for i, w in enumerate(vocab.itos)])
            for d in built:
                if hasattr(d, "set_attribute_vocabulary"):
                    d.set_attribute_vocabulary(allowed)
        self.decoder = built[0] if config.members == 1 else EnsembleDecoder(built)
        self.encoder: nn.Module | None = None

    # -- training -----------------------------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor | None = None, grid: torch.Tensor | None = None,
                images: torch.Tensor | None = None, index: torch.Tensor | None = None):
        """Teacher forcing: tokens [B, T] with features pooled [B, D] (+ grid [B, N, D] for attention), or raw
        images [B, 3, S, S] run through the attached encoder (end-to-end training of small encoders).
        With `index` [B], the features (or images) are given once per image, [U, ...], and caption b belongs to
        image index[b]: the encoder and the attention decoder's projections then run once per image.
        Returns (logits [B, T-1, V] predicting tokens[:, 1:], the decoder's unweighted auxiliary losses)."""
        if images is not None:
            if self.encoder is None:
                raise I2TError("training on images needs an attached encoder")
            pooled, grid = self.encoder(images)
        if index is None:
            return self.decoder(pooled, grid, tokens)
        if getattr(self.decoder, "takes_index", False):
            return self.decoder(pooled, grid, tokens, index=index)
        return self.decoder(pooled[index], None if grid is None else grid[index], tokens)

    # -- encoder ------------------------------------------------------------------------------------------------

    def attach_encoder(self, encoder: nn.Module) -> None:
        """Use `encoder` for `caption_images` (and store it in checkpoints when `config.store_encoder`)."""
        if getattr(encoder, "num_features", self.config.feature_dim) != self.config.feature_dim:
            raise I2TError(f"encoder gives {encoder.num_features}-d features, the decoder expects {self.config.feature_dim}")
        self.encoder = encoder.to(next(self.decoder.parameters()).device).eval()

    def ensure_encoder(self) -> nn.Module:
        """The encoder, built through `create_encoder` with its pretrained weights on first use."""
        if self.encoder is None:
            enc = create_encoder(self.config.encoder, pretrained=not self.config.store_encoder)
            want, got = self.config.encoder_weights_sha256, getattr(enc, "weights_sha256", "")
            if want and got and want != got:
                warnings.warn(f"encoder {self.config.encoder} weights differ from those the captioner was trained on "
                              f"({got[:12]} vs {want[:12]}); captions may be poor", stacklevel=2)
            self.attach_encoder(enc)
        return self.encoder

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Decoder weights, plus encoder weights only for encoders that cannot be rebuilt from pretrained files."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        if self.config.store_encoder:
            if self.encoder is None:
                raise I2TError(f"{self.config.encoder} has no pretrained weights; attach the encoder before saving")
            state.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        return state

    def save(self, path: str | Path, *, metrics: dict | None = None, info: dict | None = None, half: bool = False,
             full: bool = True) -> Path:
        """A checkpoint folder; a captioner has no training-only weights, so `full` changes nothing."""
        return save_checkpoint(path, kind=KIND, config=config_to_dict(self.config), state_dict=self.checkpoint_state(),
                               vocab=self.vocab, metrics=metrics, info=info, half=half,
                               inference=config_to_dict(self.settings))

    @classmethod
    def from_checkpoint(cls, ckpt) -> Captioner:
        cfg, settings = migrate_config(ckpt.config, ckpt.inference)
        model = cls(cfg, ckpt.vocab, settings)
        dec = {k: v for k, v in ckpt.state_dict.items() if not k.startswith("encoder.")}
        missing, unexpected = model.load_state_dict(dec, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: captioner weights do not match its config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if cfg.store_encoder:
            enc = create_encoder(cfg.encoder, pretrained=False)
            enc_state = {k[len("encoder."):]: v for k, v in ckpt.state_dict.items() if k.startswith("encoder.")}
            try:
                enc.load_state_dict(enc_state, strict=True)
            except RuntimeError:
                raise I2TError(f"{ckpt.path}: stored {cfg.encoder} encoder weights do not match the encoder") from None
            model.attach_encoder(enc)
        return model.eval()

    @property
    def num_decoder_parameters(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters())

    # -- decoding -----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def decode_features(self, pooled: torch.Tensor, grid: torch.Tensor | None = None, beam_size: int | None = None,
                        max_len: int | None = None, open_vocab: bool | None = None) -> list[CaptionResult]:
        """Caption a batch of encoder features: pooled [B, D], grid [B, N, D] (attention only). Greedy at beam 1;
        `beam_size=None` is the model's own (`settings.beam_size`); `open_vocab=None` too (`settings.open_vocab`)."""
        beam_size = self.settings.beam_size if beam_size is None else beam_size
        device = next(self.decoder.parameters()).device
        pooled = pooled.to(device, torch.float32)
        grid = grid.to(device, torch.float32) if (grid is not None and self.config.uses_grid) else None
        max_len = max_len or self.config.max_len
        once = self.said_once()
        if beam_size <= 1:
            ids, lp = greedy_search(self.decoder, pooled, grid, max_len, once)
        else:
            ids, lp = beam_search(self.decoder, pooled, grid, beam_size, max_len, self.settings.length_alpha, once)
        out = []
        for row, score in zip(ids.tolist(), lp.tolist()):
            toks = self.vocab.decode_tokens(row)
            out.append(CaptionResult(" ".join(toks), toks, float(score)))
        if self.settings.open_vocab if open_vocab is None else open_vocab:
            s = self.settings
            if getattr(self, "_open_vocab", None) is None:  # a plain attribute: never a submodule or checkpoint key
                self._open_vocab = OpenVocab(self)
            new = self._open_vocab.redecode(pooled, grid, out, beam_size, max_len, s.open_vocab_threshold,
                                            s.open_vocab_words)
            for i, (toks, score) in new.items():
                out[i] = CaptionResult(" ".join(toks), toks, score)
        return out

    def said_once(self) -> torch.Tensor | None:
        """bool [V] on the decoder's device: the words `settings.say_once` lets a caption hold once; None when off."""
        if not self.settings.say_once:
            return None
        return torch.tensor(said_once(self.vocab.itos), dtype=torch.bool, device=next(self.decoder.parameters()).device)

    @torch.inference_mode()
    def encode_images(self, images: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """PIL images -> (pooled [B, D], grid [B, N, D]) through the encoder and its preprocessing."""
        enc = self.ensure_encoder()
        tf = enc.transform()
        device = next(self.decoder.parameters()).device
        # numpy's stack: one plain copy, where torch's waits on its threads when the machine is busy
        x = torch.from_numpy(np.stack([tf(prepare_image(im)).numpy() for im in images])).to(device)
        # A frozen pretrained encoder runs as a fast frozen copy (ONNX Runtime or TorchScript; see
        # Encoder.for_bulk_inference), built on first use and kept while the encoder, device and thread count stay
        # the same. A plain tuple attribute, so the copy never becomes a submodule or enters a checkpoint.
        cached = getattr(self, "_fast_encoder", None)
        if cached is None or cached[0] is not enc or cached[1] != encoder_key(enc, device):
            fast = enc.for_bulk_inference(x) if hasattr(enc, "for_bulk_inference") else enc
            self._fast_encoder = (enc, encoder_key(enc, device), fast)
        return self._fast_encoder[2](x)

    def warm_up(self) -> None:
        """Build the encoder's fast frozen copy now (for ONNX Runtime an export of a second or more), on a blank
        picture, so that the first photo's timing (`i2t caption --json` reports milliseconds per photo) is the
        photo's own and not the one-time set-up's."""
        self.encode_images([Image.new("RGB", (224, 224))])  # the encoder's preprocessing resizes it

    def use_int8(self, calibration: Sequence | torch.Tensor | None) -> bool:
        """Encode with an int8 copy of the encoder from now on (`calibration` = ~100 real photos, PIL images or
        already preprocessed [N, 3, S, S]), or go back to fp32 with None. Returns whether int8 is now in use.

        Why opt-in: faster encoding on the CPU, but features move a little and some captions change (see
        `Encoder.quantized_for_inference`, which also falls back to fp32 with a warning when it cannot quantize).
        The int8 copy is kept like the frozen fp32 one and dropped when the encoder or device changes."""
        self._fast_encoder = None
        if calibration is None:
            return False
        enc = self.ensure_encoder()
        if not hasattr(enc, "quantized_for_inference"):
            warnings.warn("this encoder cannot be quantized; using fp32", stacklevel=2)
            return False
        device = next(self.decoder.parameters()).device
        x = calibration if isinstance(calibration, torch.Tensor) else torch.stack([enc.transform()(im)
                                                                                   for im in calibration])
        fast = enc.quantized_for_inference(x.to(device))
        self._fast_encoder = (enc, encoder_key(enc, device), fast)
        return isinstance(fast, QuantizedEncoder)

    @torch.inference_mode()
    def caption_images(self, images: Sequence, beam_size: int | None = None, max_len: int | None = None,
                       batch_size: int = 32, open_vocab: bool | None = None) -> list[CaptionResult]:
        """Caption PIL images (any size; the encoder's transform resizes them), `batch_size` at a time.

        With more than one batch, the next batch is encoded on a second thread while this one is decoded: the
        encoder (ONNX Runtime or TorchScript) runs without the GIL, and the decoder's many small per-word steps
        leave the cores idle part of the time. Each batch is encoded and decoded exactly as it would be alone."""
        self.eval()
        batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        out: list[CaptionResult] = []
        if len(batches) < 2:
            for batch in batches:
                out.extend(self.decode_features(*self.encode_images(batch), beam_size=beam_size, max_len=max_len,
                                                open_vocab=open_vocab))
            return out
        return encode_ahead(batches, self.encode_images, lambda pooled, grid: self.decode_features(
            pooled, grid, beam_size=beam_size, max_len=max_len, open_vocab=open_vocab))

    @torch.inference_mode()
    def text_logprob(self, images: Sequence, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """How likely this captioner finds each text for its image: the summed log-probability of the words and
        <end> of `texts[i]` given `images[i]` (PIL), teacher-forced, dropout off -> FloatTensor [len(images)].

        Why: it lets a captioner judge pictures it did not draw, which is what reranking a generator's samples
        needs (`img2text2img.rerank`). Words outside this captioner's vocabulary count as <unk>, as in training."""
        if len(images) != len(texts):
            raise I2TError(f"{len(images)} images but {len(texts)} texts")
        out = []
        with evaluating(self):
            for i in range(0, len(images), batch_size):
                pooled, grid = self.encode_images(images[i:i + batch_size])
                tokens = pad_batch([self.vocab.encode(t, max_len=self.config.max_len)
                                    for t in texts[i:i + batch_size]]).to(pooled.device)
                logits, _ = self.decoder(pooled.float(), grid.float() if self.config.uses_grid else None, tokens)
                logp = torch.log_softmax(logits.float(), -1).gather(2, tokens[:, 1:, None])[..., 0]
                out.append((logp * (tokens[:, 1:] != PAD_ID)).sum(1).cpu())
        return torch.cat(out) if out else torch.zeros(0)


def encoder_key(enc: nn.Module, device: torch.device) -> tuple:
    # what a cached fast encoder copy depends on besides the encoder itself (ONNX Runtime fixes its thread count)
    return (device, enc.training, torch.get_num_threads())
