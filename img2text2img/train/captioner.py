"""Training and evaluating captioners.

Large pretrained encoders stay frozen, so their features are computed once (`img2text2img.features`) and the decoder
trains on cached tensors: an epoch over Flickr8k's 30,000 training captions never touches a JPEG. Encoders without
pretrained weights (`small_cnn`, for the shapes set) are instead trained end to end on preloaded image tensors, which
is cheap at 64x64 and much better than decoding random features.

`CaptionerTask` plugs into the shared engine (`train.engine.fit`); `train_captioner` is the one-call version the CLI
and scripts use; `evaluate_captioner` scores a model on a split with both BLEU scorers (and the COCO metrics).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import Dataset

from img2text2img.config import config_to_dict
from img2text2img.data import CaptionDataset, load_dataset, load_image
from img2text2img.errors import I2TError
from img2text2img.metrics.caption import coco_scores, corpus_bleu_scores
from img2text2img.models import evaluating
from img2text2img.models.captioner import NETWORK_FIELDS, Captioner, CaptionResult, captioner_config
from img2text2img.train.engine import TrainConfig, TrainTask, fit, seed_everything
from img2text2img.vocab import PAD_ID, START_ID, Vocabulary, pad_batch, tokenize


@dataclass
class CaptionTrainOptions:
    """What to train, beside the engine's `TrainConfig`."""

    model: str = "mobilenet_v2+attention"  # registry name, see `list_captioners()`
    data: str = "flickr8k"  # flickr8k | shapes | shapes:N | a dataset folder
    data_dir: str | None = None
    min_count: int = 5  # words seen fewer times in the training captions become <unk>
    glove: bool = False  # initialise word embeddings from GloVe (sets embed_dim=50)
    glove_source: str | None = None  # a GloVe file/folder or "kumo"; None = the shared 50-d slice
    overrides: dict = field(default_factory=dict)  # CaptionerConfig field overrides
    val_images: int | None = None  # score validation BLEU on the first N val images (None = all)
    eval_beam: int = 1  # beam width used for the validation BLEU during training (1 = greedy, fast)
    cache_dir: str | None = None  # feature cache folder (None = the default cache)
    init_from: str | None = None  # start from this captioner's weights, configuration and vocabulary
    scst: bool = False  # self-critical training on CIDEr-D (SCSTTask) instead of cross-entropy; needs init_from
    scst_samples: int = 5  # captions sampled per image; each one's baseline is the mean reward of the others
    # a batch is `batch_size` images with all their captions, so each image's features are projected once per step
    # instead of once per caption (the attention decoder's largest cost per caption); see CaptionerTask.collate
    group_images: bool = False


class _PairDataset(Dataset):
    """(image row, caption ids) pairs: every caption of every training image is one example."""

    def __init__(self, pairs: list[tuple[int, list[int]]]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[int, list[int]]:
        return self.pairs[i]


class FeatureSource:
    """Per-image inputs for a split: cached encoder features (pooled [n, D], grid [n, N, D]) or image tensors."""

    def __init__(self, images: list[str], pooled=None, grid=None, pixels=None):
        self.images, self.pooled, self.grid, self.pixels = images, pooled, grid, pixels
        self.row = {im: i for i, im in enumerate(images)}

    def subset(self, images: list[str]) -> FeatureSource:
        rows = torch.tensor([self.row[im] for im in images], dtype=torch.long)
        pick = (lambda t: None if t is None else t[rows])
        return FeatureSource(list(images), pick(self.pooled), pick(self.grid), pick(self.pixels))

    def batch(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.pixels is not None:
            return {"images": self.pixels[rows].float()}
        out = {"pooled": self.pooled[rows].float()}
        if self.grid is not None:
            out["grid"] = self.grid[rows].float()
        return out

    def __len__(self) -> int:
        return len(self.images)


def load_features(model: Captioner, dataset: CaptionDataset, images: list[str], cache_dir: str | None = None,
                  progress: bool = False) -> FeatureSource:
    """Inputs for `images`: the encoder's cached features, or (end-to-end encoders) preprocessed pixels."""
    if model.config.store_encoder:
        tf = model.ensure_encoder().transform()
        pixels = torch.stack([tf(load_image(dataset.image_path(im))) for im in images]).half()
        return FeatureSource(images, pixels=pixels)
    from img2text2img.features import encode_dataset

    # A cache of the whole dataset serves any split, so one encoding pass feeds training and evaluation.
    cache = encode_dataset(model.config.encoder, dataset, images=images, grid=model.config.uses_grid,
                           cache_dir=cache_dir, progress=progress, mirror_average=model.config.mirror_average)
    pooled = cache.pooled_for(images).half()
    grid = cache.grid_for(images).half() if model.config.uses_grid else None
    sha = cache.encoder.get("weights_sha256") or ""
    if not model.config.encoder_weights_sha256:
        model.config.encoder_weights_sha256 = sha
    elif sha and sha != model.config.encoder_weights_sha256:
        raise I2TError(f"the cached {model.config.encoder} features come from other weights than the captioner's")
    return FeatureSource(images, pooled=pooled, grid=grid)


class CaptionerTask(TrainTask):
    kind = "captioner"
    main_metric = "bleu4"

    def __init__(self, opts: CaptionTrainOptions, dataset: CaptionDataset | None = None, vocab: Vocabulary | None = None,
                 sources: dict[str, FeatureSource] | None = None):
        """`sources` ("train", optional "val"): precomputed inputs to use instead of the feature cache; training
        then uses only the images they hold."""
        self.opts = opts
        self.dataset = dataset or load_dataset(opts.data, opts.data_dir)
        train_imgs = self.dataset.split("train")
        if sources is not None:
            train_imgs = [im for im in train_imgs if im in sources["train"].row]
        start = None
        if opts.init_from:
            from img2text2img.models.captioner import load_captioner

            start = load_captioner(opts.init_from)
            vocab = start.vocab
            opts.model = f"{start.config.encoder}+{start.config.decoder}"
        self.vocab = vocab or Vocabulary.build(self.dataset.all_captions("train"), min_count=opts.min_count)
        overrides = dict(opts.overrides)
        if start is not None:
            # its weights must fit: refuse a change to the network in one line instead of a failed load further on
            changed = sorted(k for k in NETWORK_FIELDS if k in overrides and overrides[k] != getattr(start.config, k))
            if changed:
                names = ", ".join("--" + k.replace("_", "-") for k in changed)
                raise I2TError(f"{names} cannot change when a run starts from --init-from (the network is kept)")
            # the starting model's architecture, with the run's own overrides on top
            overrides = {**{k: v for k, v in config_to_dict(start.config).items() if k != "vocab_size"}, **overrides}
        if opts.glove:
            overrides["embed_dim"] = 50
        cfg = captioner_config(opts.model, vocab_size=len(self.vocab), **overrides)
        if cfg.feature_dim <= 0:
            from img2text2img.models.encoders import encoder_spec

            cfg.feature_dim = encoder_spec(cfg.encoder).num_features
        random_init = _random_init_encoder(cfg.encoder)
        # the encoder runs on every batch when it trains (from scratch, small_cnn, or its last blocks fine-tuned), and
        # when the starting model stores one (`store_encoder` comes with its config): a fine-tuned encoder kept frozen
        # has no feature cache, and dropping it would pair the decoder with the ImageNet weights it was moved from
        end_to_end = random_init or cfg.encoder_trainable_blocks > 0 or cfg.store_encoder
        cfg.store_encoder = end_to_end
        self.model = Captioner(cfg, self.vocab)
        # a starting model that stores its encoder brings the weights: the pretrained file is then not needed
        start_encoder = start is not None and start.config.store_encoder
        if end_to_end:
            from img2text2img.models.encoders import create_encoder

            self.model.attach_encoder(create_encoder(
                cfg.encoder, pretrained=not random_init and not start_encoder,
                trainable_blocks=1000 if random_init else cfg.encoder_trainable_blocks))
        if start is not None:
            # checkpoint_state() holds the stored encoder's weights too, so this one load fills the encoder as well
            missing, unexpected = self.model.load_state_dict(start.checkpoint_state(), strict=False)
            # a word detector added to a model without one starts untrained
            added = ("decoder.attr_",) if cfg.attribute_words and not start.config.attribute_words else ()
            missing = [k for k in missing if not k.startswith(added)] if added else missing
            if [k for k in missing if start_encoder or not k.startswith("encoder.")] or unexpected:
                raise I2TError(f"{opts.init_from}: weights do not fit the model built from its own config")
        self.glove_report = None
        if opts.glove and start is None:
            from img2text2img.vocab import load_word_vectors

            self.glove_report = self.model.decoder.embed.init_from_vectors(self.vocab, load_word_vectors(opts.glove_source))
        if sources is not None:
            self.train_src = sources["train"]
            self.val_src = sources.get("val")
            self.val_imgs = self.val_src.images if self.val_src is not None else []
        else:
            self.train_src = load_features(self.model, self.dataset, train_imgs, opts.cache_dir)
            val = self.dataset.splits.get("val", [])
            self.val_imgs = val[: opts.val_images] if opts.val_images else val
            self.val_src = load_features(self.model, self.dataset, self.val_imgs, opts.cache_dir) if self.val_imgs else None
        L = cfg.max_len
        self.pairs = [(self.train_src.row[im], self.vocab.encode(c, max_len=L))
                      for im in train_imgs for c in self.dataset.captions.get(im, [])]
        self.groups = None  # grouped: one example per image row, holding all its captions (the pairs, regrouped)
        if opts.group_images:
            by_row: dict[int, list[list[int]]] = {}
            for row, ids in self.pairs:
                by_row.setdefault(row, []).append(ids)
            self.groups = list(by_row.items())

    def train_dataset(self) -> Dataset:
        return _PairDataset(self.groups if self.groups is not None else self.pairs)

    def collate(self, items):
        rows = torch.tensor([r for r, _ in items], dtype=torch.long)
        if self.groups is None:
            return {"tokens": pad_batch([ids for _, ids in items]), **self.train_src.batch(rows)}
        # each image's features once; `index` says which image every caption belongs to
        index = torch.tensor([i for i, (_, caps) in enumerate(items) for _ in caps], dtype=torch.long)
        return {"tokens": pad_batch([ids for _, caps in items for ids in caps]), "index": index,
                **self.train_src.batch(rows)}

    def loss(self, model, batch):
        logits, aux = model(batch["tokens"], batch.get("pooled"), batch.get("grid"), batch.get("images"),
                            index=batch.get("index"))
        loss = self.model.loss_from_logits(logits, aux, batch["tokens"])
        return loss, {}

    def sample_lengths(self) -> list[int] | None:
        # a grouped batch mixes lengths anyway; the decoders skip padding themselves (shrinking batches)
        return None if self.groups is not None else [len(ids) for _, ids in self.pairs]

    def tokens_in(self, batch) -> int:
        return int((batch["tokens"][:, 1:] != PAD_ID).sum())

    def evaluate(self, model) -> dict[str, float]:
        if self.val_src is None:
            return {}
        hyps = decode_source(self.model, self.val_src, beam_size=self.opts.eval_beam)
        refs = [[tokenize(c) for c in self.dataset.captions[im]] for im in self.val_imgs]
        from img2text2img.metrics.cider import CiderD

        scores = corpus_bleu_scores(refs, [h.tokens for h in hyps])
        scores["cider_d"] = CiderD(refs).corpus_score([h.tokens for h in hyps], refs)
        return scores

    def checkpoint_state(self):
        return self.model.checkpoint_state()

    def load_checkpoint_state(self, state):
        dec = {k: v for k, v in state.items() if not k.startswith("encoder.")}
        self.model.load_state_dict(dec, strict=False)
        enc = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
        if enc and self.model.encoder is not None:
            self.model.encoder.load_state_dict(enc, strict=True)


class SCSTTask(CaptionerTask):
    """Self-critical sequence training (Rennie et al. 2017): fine-tune a cross-entropy-trained captioner on the
    metric itself. For each training image the decoder samples `scst_samples` captions; each is rewarded with its
    CIDEr-D against the image's references, minus the mean reward of the image's other samples (the baseline of
    Luo 2020, which needs no extra greedy decode); the loss is -advantage * log-probability of the sampled words.

    Teacher forcing only ever shows the model gold prefixes; here it learns from its own, which is what it sees when
    it captions. The decoder samples with dropout off, as it decodes at test time."""

    def __init__(self, opts: CaptionTrainOptions, **kw):
        if not opts.init_from:
            raise I2TError("self-critical training starts from a trained captioner: pass --init-from RUN")
        if opts.scst_samples < 2:
            raise I2TError("self-critical training needs at least 2 samples per image (the baseline is the others' mean)")
        super().__init__(opts, **kw)
        from img2text2img.metrics.cider import CiderD

        self.train_imgs = list(self.train_src.images)
        self.refs = [[tokenize(c) for c in self.dataset.captions.get(im, [])] for im in self.train_imgs]
        self.cider = CiderD(self.refs)

    def train_dataset(self) -> Dataset:
        return _PairDataset([(i, []) for i in range(len(self.train_imgs))])

    def collate(self, items):
        rows = torch.tensor([r for r, _ in items], dtype=torch.long)
        return {"rows": rows, **self.train_src.batch(rows)}

    def sample_lengths(self) -> None:
        return None

    def tokens_in(self, batch) -> int:
        return 0

    def loss(self, model, batch):
        from img2text2img.models.captioner import sample_search

        m = self.model
        m.decoder.eval()
        if "images" in batch:  # an end-to-end encoder (shapes) trains along
            pooled, grid = m.encoder(batch["images"])
        else:
            pooled, grid = batch["pooled"], batch.get("grid")
        n = self.opts.scst_samples
        # the global RNG, seeded by the engine and saved in its checkpoints, so a resumed run draws the same samples
        with torch.no_grad():
            ids, _, mask = sample_search(m.decoder, pooled, grid, n, m.config.max_len)
        # The samples' log-probabilities come from one teacher-forced pass through `model`, the engine's (under
        # torchrun DistributedDataParallel-wrapped) module, so gradients are synchronised across processes; the
        # step-by-step sampling above runs the bare decoder, which DDP would not see.
        tokens = torch.cat([torch.full_like(ids[:, :1], START_ID), ids], 1)
        index = torch.arange(pooled.shape[0], device=ids.device).repeat_interleave(n)  # samples of one image in a row
        logits, _ = model(tokens, pooled, grid, index=index)
        logp = torch.log_softmax(logits.float(), -1).gather(2, ids[:, :, None])[:, :, 0] * mask
        rows = batch["rows"].repeat_interleave(n).tolist()
        rewards = torch.tensor([self.cider.score(self.vocab.decode_tokens(seq), self.refs[r], key=r)
                                for seq, r in zip(ids.tolist(), rows)], device=logp.device).view(-1, n)
        baseline = (rewards.sum(1, keepdim=True) - rewards) / (n - 1)
        adv = (rewards - baseline).view(-1, 1)
        loss = -(adv * logp * mask).sum() / mask.sum().clamp(min=1)
        return loss, {"cider": float(rewards.mean()), "words": float(mask.sum(1).float().mean())}


def _random_init_encoder(name: str) -> bool:
    from img2text2img.models.encoders import encoder_spec

    return encoder_spec(name).random_init


@torch.inference_mode()
def decode_source(model: Captioner, src: FeatureSource, beam_size: int | None = None, batch_size: int = 100,
                  max_len: int | None = None) -> list[CaptionResult]:
    """Caption every image of a FeatureSource, `batch_size` images per decoder call."""
    out: list[CaptionResult] = []
    with evaluating(model):
        for i in range(0, len(src), batch_size):
            rows = torch.arange(i, min(i + batch_size, len(src)))
            b = src.batch(rows)
            if "images" in b:
                device = next(model.decoder.parameters()).device
                pooled, grid = model.encoder(b["images"].to(device))
            else:
                pooled, grid = b["pooled"], b.get("grid")
            out.extend(model.decode_features(pooled, grid, beam_size=beam_size, max_len=max_len))
    return out


def train_captioner(opts: CaptionTrainOptions, cfg: TrainConfig, sources: dict[str, FeatureSource] | None = None) -> dict:
    """Train a captioner; returns the engine's summary plus the model's size and GloVe coverage."""
    seed_everything(cfg.seed)
    t0 = time.time()
    task = (SCSTTask if opts.scst else CaptionerTask)(opts, sources=sources)
    prep = time.time() - t0
    summary = fit(task, cfg)
    summary.update({"model": opts.model, "decoder_parameters": task.model.num_decoder_parameters,
                    "train_images": len(task.train_src), "val_images": len(task.val_imgs),
                    "vocab_size": len(task.vocab), "train_pairs": len(task.pairs), "prepare_seconds": round(prep, 1),
                    "glove": task.glove_report, "config": config_to_dict(task.model.config),
                    "init_from": opts.init_from, "objective": "scst-cider-d" if opts.scst else "cross-entropy"})
    return summary


def evaluate_captioner(model: Captioner, data: str | CaptionDataset = "flickr8k", split: str = "test",
                       beam_size: int | None = None, coco: bool = True, data_dir: str | None = None, limit: int | None = None,
                       cache_dir: str | None = None, examples: int = 5) -> dict:
    """Score `model` on a split against all references: nltk BLEU-1..4 (project tokens) and, when `coco`, the COCO
    metrics (PTB tokens). Also reports decode speed and a few example captions."""
    ds = data if isinstance(data, CaptionDataset) else load_dataset(data, data_dir)
    imgs = ds.split(split)[:limit] if limit else ds.split(split)
    src = load_features(model, ds, imgs, cache_dir)
    t0 = time.perf_counter()
    hyps = decode_source(model, src, beam_size=beam_size)
    secs = time.perf_counter() - t0
    refs_raw = [ds.captions[im] for im in imgs]
    out: dict = {"data": ds.name, "split": split, "images": len(imgs),
                 "beam": model.config.beam_size if beam_size is None else beam_size,
                 "length_alpha": model.config.length_alpha}
    out.update(corpus_bleu_scores([[tokenize(c) for c in r] for r in refs_raw], [h.tokens for h in hyps]))
    if coco:
        out.update(coco_scores(refs_raw, [h.text for h in hyps]))
    out["decode_images_per_s"] = round(len(imgs) / max(secs, 1e-9), 1)
    out["examples"] = [{"image": im, "caption": h.text, "reference": r[0]}
                       for im, h, r in list(zip(imgs, hyps, refs_raw))[:examples]]
    return out


def save_shipped(model: Captioner, out: str | Path, metrics: dict | None = None, info: dict | None = None) -> Path:
    """Write a compact fp16 copy (decoder + vocabulary, + encoder when it has no pretrained file) for shipping."""
    return model.save(out, metrics=metrics, info=info, half=True)
