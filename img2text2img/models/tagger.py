"""The tagger: a CNN encoder and a head that names the tags of an image.

Two heads on the same pooled encoder vector, so users can compare:

- `rnn` (CNN-RNN): the image vector initialises an LSTM that reads tag embeddings (the shared `SharedEmbedding`) and
  emits one tag after another until `<end>`. Targets are ordered by global frequency, which in the tag vocabulary is
  ascending id, so the decoder only ever may emit a tag with a larger id than the previous one (or `<end>`). The same
  mask is applied in training and decoding; it rules out repeats by construction and shrinks the search space. Beam
  search runs over whole tag sequences.
- `bce`: a linear multi-label layer with one sigmoid per tag and binary cross-entropy; tags whose probability reaches
  `threshold` (tuned on the validation split during training) are predicted. Its per-tag probabilities also give mAP.

The image vector is the encoder's pooled vector (`pool="mean"`, what the feature cache stores) or, for small objects
on a plain background (the shapes set), the mean and the max over the feature grid (`pool="meanmax"`). The RNN head
can add an auxiliary per-tag BCE loss on its image term (`aux_bce`): a gradient for every tag of an image at once,
which makes a randomly initialised CNN learn faster than the one-tag-per-step sequence loss alone.

Checkpoints hold the head weights, the tag vocabulary and the encoder's name and weights sha256. A frozen pretrained
encoder is rebuilt at load time through `create_encoder` (its sha256 must match); an encoder that was trained
(`trainable_blocks > 0`) or randomly initialised (`small_cnn`) has its weights stored in the checkpoint.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from img2text2img.config import config_from_dict, config_to_dict
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.registry import Registry
from img2text2img.vocab import END_ID, PAD_ID, SPECIALS, START_ID, SharedEmbedding, Vocabulary

NEG = -1e4  # "impossible" logit; finite so fp16 and log_softmax stay NaN-free
HEADS = ("rnn", "bce")


@dataclass
class TaggerConfig:
    encoder: str = "mobilenet_v2"  # name in the encoder registry (models/encoders.py)
    encoder_pretrained: bool = True  # False: random init; the encoder weights are then stored in checkpoints
    trainable_blocks: int = 0  # last encoder blocks fine-tuned (0 = frozen; their weights are then stored too)
    encoder_sha256: str | None = None  # weights the head was trained on; checked at load time
    pool: str = "mean"  # mean: the encoder's pooled vector [D]; meanmax: [mean, max] over the grid [2D] (small objects)
    feature_dim: int = 0  # size of the image vector the head reads; filled from the encoder and `pool`
    head: str = "rnn"  # rnn | bce
    vocab_size: int = 0  # tag vocabulary size including the 4 specials
    embed_dim: int = 128  # rnn: tag embedding size
    hidden: int = 256  # rnn: LSTM state size
    dropout: float = 0.3  # on the image vector and the LSTM output
    max_tags: int = 12  # rnn: longest tag sequence emitted
    beam: int = 3  # rnn: beam width (1 = greedy)
    aux_bce: float = 0.0  # rnn: weight of an auxiliary per-tag BCE loss on the image term (dense signal, faster start)
    threshold: float = 0.5  # bce: predict the tags with probability >= threshold


TAGGERS: Registry[TaggerConfig] = Registry("tagger")
TAGGERS.add("mobilenet_v2+rnn", TaggerConfig("mobilenet_v2", head="rnn"))
TAGGERS.add("mobilenet_v2+bce", TaggerConfig("mobilenet_v2", head="bce"))
TAGGERS.add("efficientnet_lite0+rnn", TaggerConfig("efficientnet_lite0", head="rnn"))
TAGGERS.add("efficientnet_lite0+bce", TaggerConfig("efficientnet_lite0", head="bce"))
TAGGERS.add("mobilenet_v3_small+rnn", TaggerConfig("mobilenet_v3_small", head="rnn"))
TAGGERS.add("mobilenet_v3_small+bce", TaggerConfig("mobilenet_v3_small", head="bce"))
TAGGERS.add("googlenet+rnn", TaggerConfig("googlenet", head="rnn"))
TAGGERS.add("googlenet+bce", TaggerConfig("googlenet", head="bce"))
# Tests and the shapes set: a tiny CNN trained end to end (64x64 inputs).
TAGGERS.add("small_cnn+rnn-tiny", TaggerConfig("small_cnn", encoder_pretrained=False, trainable_blocks=99, head="rnn",
                                               pool="meanmax", embed_dim=32, hidden=128, dropout=0.1, max_tags=9, beam=2,
                                               aux_bce=1.0))
TAGGERS.add("small_cnn+bce-tiny", TaggerConfig("small_cnn", encoder_pretrained=False, trainable_blocks=99, head="bce",
                                               pool="meanmax", dropout=0.1))


def list_taggers() -> list[str]:
    return TAGGERS.names()


def tagger_config(name: str, **overrides) -> TaggerConfig:
    """A registered preset with fields overridden (`encoder=`, `head=`, `hidden=` ...)."""
    return replace(TAGGERS.get(name), **overrides)


def order_mask(prev: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """prev [...] (the previously emitted id, <start> at the first step) -> bool [..., V], True = not allowed.

    Allowed: `<end>`, and tags with an id larger than `prev` (targets are sorted by id). Never allowed: <pad>,
    <start>, <unk>, and any tag at or below `prev` (so no tag can repeat)."""
    ar = torch.arange(vocab_size, device=prev.device)
    bad = ar <= prev.unsqueeze(-1)  # ... x V
    bad = bad | (ar < len(SPECIALS))
    bad[..., END_ID] = False
    return bad


class RNNTagHead(nn.Module):
    """pooled [B, D] -> an LSTM over tag embeddings; `forward(features, inp [B, T]) -> logits [B, T, V]` (masked)."""

    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)
        self.init_h = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.init_c = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.img_proj = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.embed = SharedEmbedding(cfg.vocab_size, cfg.embed_dim)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, cfg.vocab_size)

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features [B, D] -> (h0, c0) [1, B, H] each, and the image term [B, 1, H] added at every step."""
        f = self.drop(features)  # B x D
        h = torch.tanh(self.init_h(f)).unsqueeze(0)
        c = torch.tanh(self.init_c(f)).unsqueeze(0)
        return h, c, self.img_proj(f).unsqueeze(1)

    def step_logits(self, inp: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        """inp [B, T] ids -> (logits [B, T, V] with the order mask applied, new state).

        As in the CNN-RNN of Wang et al. (2016), the output joins the recurrent state (what was emitted so far) with
        a projection of the image at every step, so the image need not survive in the LSTM state alone."""
        h, c, img = state
        out, (h, c) = self.lstm(self.embed(inp), (h, c))  # B x T x H
        logits = self.out(self.drop(torch.relu(out + img)))  # B x T x V
        return logits.masked_fill(order_mask(inp, logits.shape[-1]), NEG), (h, c, img)

    def forward(self, features: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        return self.step_logits(inp, self.init_state(features))[0]

    def loss(self, features: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        h, c, img = self.init_state(features)
        logits = self.step_logits(batch["inp"], (h, c, img))[0]  # B x T x V
        loss = F.cross_entropy(logits.flatten(0, 1), batch["tgt"].flatten(), ignore_index=PAD_ID)
        if not self.cfg.aux_bce:
            return loss, {}
        # every tag of the image from the image term alone: a gradient for all tags at once, not one per step
        aux_logits = self.out(self.drop(torch.relu(img[:, 0])))[:, len(SPECIALS):]  # B x (V-4)
        aux = F.binary_cross_entropy_with_logits(aux_logits, batch["multi_hot"][:, len(SPECIALS):])
        return loss + self.cfg.aux_bce * aux, {"seq": float(loss.detach()), "aux": float(aux.detach())}

    @torch.no_grad()
    def decode(self, features: torch.Tensor, beam: int | None = None, max_tags: int | None = None
               ) -> list[list[tuple[int, float]]]:
        """Beam search. features [B, D] -> per image the best sequence as [(tag id, p(tag | prefix, image))].

        Sequences are scored by their summed log-probability (the `<end>` step included), so the beam weighs "stop
        now" against "one more tag" with the model's own probabilities."""
        k = max(1, beam or self.cfg.beam)
        T = max_tags or self.cfg.max_tags
        B, V = features.shape[0], self.cfg.vocab_size
        h, c, img = self.init_state(features)  # 1 x B x H, 1 x B x H, B x 1 x H
        h, c, img = h.repeat_interleave(k, 1), c.repeat_interleave(k, 1), img.repeat_interleave(k, 0)  # B*k rows
        dev = features.device
        seqs = torch.full((B * k, 0), PAD_ID, dtype=torch.long, device=dev)
        steps = torch.zeros((B * k, 0), device=dev)  # per-step log-probs
        score = torch.full((B, k), float("-inf"), device=dev)
        score[:, 0] = 0.0  # only one live hypothesis at the start
        score = score.view(-1)
        last = torch.full((B * k,), START_ID, dtype=torch.long, device=dev)
        done = torch.zeros(B * k, dtype=torch.bool, device=dev)
        for t in range(T + 1):
            logits, (h2, c2, _) = self.step_logits(last.unsqueeze(1), (h, c, img))
            logp = F.log_softmax(logits[:, 0].float(), dim=-1)  # B*k x V
            logp = logp.masked_fill(logits[:, 0] <= NEG / 2, float("-inf"))  # masked ids are impossible, not unlikely
            if t == T:  # length limit: only <end> remains
                keep = logp[:, END_ID].clone()
                logp.fill_(float("-inf"))
                logp[:, END_ID] = keep
            # finished hypotheses continue with <pad> at no cost and nothing else
            logp[done] = float("-inf")
            logp[done, PAD_ID] = 0.0
            cand = (score.unsqueeze(1) + logp).view(B, k * V)
            top, idx = cand.topk(k, dim=1)  # B x k
            src = (idx // V + torch.arange(B, device=dev).unsqueeze(1) * k).view(-1)  # B*k rows they extend
            tok = (idx % V).view(-1)
            step_lp = logp.view(B, k * V).gather(1, idx).view(-1)
            seqs = torch.cat([seqs[src], tok.unsqueeze(1)], 1)
            steps = torch.cat([steps[src], step_lp.unsqueeze(1)], 1)
            score = top.view(-1)
            done = done[src] | (tok == END_ID) | (tok == PAD_ID)
            last = torch.where(done, last[src], tok)
            h, c = h2[:, src], c2[:, src]
            if bool(done.all()):
                break
        best = score.view(B, k).argmax(1) + torch.arange(B, device=dev) * k
        out = []
        for r in best.tolist():
            tags = []
            for tok, lp in zip(seqs[r].tolist(), steps[r].tolist()):
                if tok in (END_ID, PAD_ID):
                    break
                tags.append((tok, math.exp(lp)))
            out.append(tags)
        return out


class BCETagHead(nn.Module):
    """pooled [B, D] -> one logit per tag [B, V]; the special ids never fire."""

    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)
        self.linear = nn.Linear(cfg.feature_dim, cfg.vocab_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(features))  # B x V

    def loss(self, features: torch.Tensor, batch: dict) -> tuple[torch.Tensor, dict]:
        logits = self(features)[:, len(SPECIALS):]  # B x (V-4)
        return F.binary_cross_entropy_with_logits(logits, batch["multi_hot"][:, len(SPECIALS):]), {}

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, D] -> p(tag) [B, V] with the specials at 0."""
        p = torch.sigmoid(self(features).float())
        p[:, : len(SPECIALS)] = 0.0
        return p

    @torch.no_grad()
    def decode(self, features: torch.Tensor, threshold: float | None = None, top: int | None = None
               ) -> list[list[tuple[int, float]]]:
        th = self.cfg.threshold if threshold is None else threshold
        p = self.probabilities(features)
        out = []
        for row in p:
            vals, ids = row.sort(descending=True)
            keep = [(int(i), float(v)) for v, i in zip(vals.tolist(), ids.tolist()) if v >= th and i >= len(SPECIALS)]
            out.append(keep[:top] if top else keep)
        return out


HEAD_CLASSES = {"rnn": RNNTagHead, "bce": BCETagHead}
POOLS = ("mean", "meanmax")


class Tagger(nn.Module):
    """Encoder + tag head. `forward(batch) -> (loss, logs)` trains on either `batch["features"]` (pooled vectors from
    the feature cache) or `batch["images"]` [B, 3, S, S] (raw images: augmentation, fine-tuning)."""

    def __init__(self, config: TaggerConfig, vocab: Vocabulary, encoder: nn.Module | None = None):
        super().__init__()
        if config.head not in HEAD_CLASSES:
            raise I2TError(f"unknown tagger head {config.head!r}; choose from: {', '.join(HEADS)}")
        if config.pool not in POOLS:
            raise I2TError(f"unknown tagger pooling {config.pool!r}; choose from: {', '.join(POOLS)}")
        if encoder is None:
            from img2text2img.models.encoders import create_encoder

            encoder = create_encoder(config.encoder, pretrained=config.encoder_pretrained,
                                     trainable_blocks=config.trainable_blocks)
        if config.vocab_size and config.vocab_size != len(vocab):
            raise I2TError(f"tagger config says {config.vocab_size} tags but the vocabulary has {len(vocab)}")
        dim = encoder.num_features * (2 if config.pool == "meanmax" else 1)
        config = replace(config, vocab_size=len(vocab), feature_dim=dim,
                         encoder_sha256=config.encoder_sha256 or getattr(encoder, "weights_sha256", None))
        self.config = config
        self.vocab = vocab
        self.encoder = encoder
        self.head = HEAD_CLASSES[config.head](config)

    # -- training ---------------------------------------------------------------------------------------------------

    @property
    def encoder_trained(self) -> bool:
        """True when the encoder's weights are not the pretrained file's (random init or fine-tuned)."""
        return not self.config.encoder_pretrained or self.config.trainable_blocks > 0

    def _pool(self, images: torch.Tensor) -> torch.Tensor:
        pooled, grid = self.encoder(images)  # B x D, B x N x D
        if self.config.pool == "meanmax":  # a small object barely moves the mean but sets the max
            return torch.cat([pooled, grid.amax(1)], 1)  # B x 2D
        return pooled

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> image vectors [B, F]; no autograd through a frozen encoder."""
        if any(p.requires_grad for p in self.encoder.parameters()) and torch.is_grad_enabled():
            return self._pool(images)
        with torch.no_grad():
            return self._pool(images)

    def features_of(self, batch: dict) -> torch.Tensor:
        if "features" in batch:
            return batch["features"].float()
        return self.encode(batch["images"])

    def forward(self, batch: dict) -> tuple[torch.Tensor, dict]:
        return self.head.loss(self.features_of(batch), batch)

    # -- inference --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_features(self, features: torch.Tensor, top: int | None = None, **kw) -> list[list[tuple[str, float]]]:
        """pooled [B, D] -> per image [(tag, score)] sorted by score (RNN: p(tag | prefix); BCE: p(tag))."""
        if self.config.head == "bce":
            rows = self.head.decode(features.float(), threshold=kw.get("threshold"))
        else:
            rows = self.head.decode(features.float(), beam=kw.get("beam"), max_tags=kw.get("max_tags"))
        out = []
        for r in rows:
            r = sorted(r, key=lambda x: -x[1])
            out.append([(self.vocab.itos[i], s) for i, s in (r[:top] if top else r)])
        return out

    @torch.no_grad()
    def tag_images(self, images: Sequence, top: int | None = 10, batch_size: int = 32, **kw) -> list[list[tuple[str, float]]]:
        """PIL images -> per image up to `top` (tag, score) pairs, highest score first."""
        tf = self.encoder.transform()
        dev = next(self.parameters()).device
        out: list[list[tuple[str, float]]] = []
        with evaluating(self):
            for i in range(0, len(images), batch_size):
                x = torch.stack([tf(im.convert("RGB")) for im in images[i : i + batch_size]]).to(dev)
                out += self.predict_features(self.encode(x), top=top, **kw)
        return out

    # -- checkpoints ------------------------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Head weights, plus the encoder's when they are not the pretrained file's."""
        sd = self.state_dict()
        if self.encoder_trained:
            return sd
        return {k: v for k, v in sd.items() if not k.startswith("encoder.")}

    def save(self, path: str | Path, metrics: dict | None = None, half: bool = False) -> Path:
        from img2text2img.checkpoint import save_checkpoint

        return save_checkpoint(path, kind="tagger", config=config_to_dict(self.config), state_dict=self.checkpoint_state(),
                               vocab=self.vocab, metrics=metrics, half=half)

    @classmethod
    def from_checkpoint(cls, ckpt) -> Tagger:
        cfg = config_from_dict(TaggerConfig, ckpt.config)
        has_encoder = any(k.startswith("encoder.") for k in ckpt.state_dict)
        from img2text2img.models.encoders import create_encoder

        if has_encoder:
            encoder = create_encoder(cfg.encoder, pretrained=False, trainable_blocks=cfg.trainable_blocks)
        else:
            encoder = create_encoder(cfg.encoder, pretrained=True, trainable_blocks=cfg.trainable_blocks)
            if cfg.encoder_sha256 and encoder.weights_sha256 and encoder.weights_sha256 != cfg.encoder_sha256:
                raise I2TError(f"{ckpt.path}: the tagger was trained on {cfg.encoder} weights {cfg.encoder_sha256[:12]}..., "
                               f"but the weights found are {encoder.weights_sha256[:12]}... ({encoder.weights_source})")
        model = cls(cfg, ckpt.vocab, encoder=encoder)
        state = ckpt.state_dict
        if not has_encoder:
            state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **state}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: weights do not fit the tagger config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()


def create_tagger(name: str, vocab: Vocabulary, **overrides) -> Tagger:
    """Build a registered tagger (`mobilenet_v2+rnn`, ...) for a tag vocabulary."""
    return Tagger(tagger_config(name, **overrides), vocab)


# -- the library one-call function -----------------------------------------------------------------------------------


def default_tagger_dir() -> Path:
    """The tagger shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "pretrained" / "tagger"


def load_tagger(path: str | Path | None = None, device: str = "cpu") -> Tagger:
    """A trained tagger from a checkpoint or run folder; None = the embedded default."""
    from img2text2img.models import load_model

    if path is None:
        path = default_tagger_dir()
        if not (path / "config.json").exists():
            raise I2TError("no tagger ships with this install (img2text2img/pretrained/tagger is missing); pass --model DIR")
    return load_model(path, kind="tagger", device=device)


def tag(images: Sequence, model: Tagger | str | Path | None = None, top: int = 10) -> list[list[tuple[str, float]]]:
    """Tag images (PIL images or paths): per image up to `top` (tag, score) pairs. `model` None = embedded default."""
    from img2text2img.data import load_image

    if not isinstance(model, Tagger):
        model = load_tagger(model)
    pil = [load_image(im) if isinstance(im, (str, Path)) else im for im in images]
    return model.tag_images(pil, top=top)
