"""Training and evaluating captioners.

Large pretrained encoders stay frozen, so their features are computed once (`img2text2img.features`) and the decoder
trains on cached tensors: an epoch over Flickr8k's training captions never touches a JPEG. Encoders without
pretrained weights (`small_cnn`, for the shapes set) and fine-tuned ones train end to end on preloaded image tensors.

`CaptionerRecipe` (train/captioner_recipe.py) is everything `i2t train captioner` can set; `CaptionerTask` and
`SCSTTask` plug into the shared engine (`train.engine.fit`); `train_captioner` is the one call the CLI and scripts
use; `evaluate_captioner` scores a model on a split with both BLEU scorers (and the COCO metrics).
"""
from __future__ import annotations

import time
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from img2text2img.config import config_to_dict
from img2text2img.data import CaptionDataset, load_dataset, load_image
from img2text2img.data.augment import AugmentedPairs, parse_augment
from img2text2img.errors import I2TError
from img2text2img.features import encode_dataset
from img2text2img.metrics.caption import coco_scores, corpus_bleu_scores
from img2text2img.metrics.cider import CiderD
from img2text2img.models import evaluating
from img2text2img.models.captioner import Captioner, CaptionResult, captioner_config, load_captioner, sample_search
from img2text2img.models.encoders import create_encoder, encoder_spec
from img2text2img.openvocab.heldout import without_words
from img2text2img.train.captioner_recipe import CaptionerRecipe
from img2text2img.train.engine import TrainConfig, TrainTask, fit, seed_everything
from img2text2img.vocab import PAD_ID, START_ID, Vocabulary, load_word_vectors, pad_batch, tokenize


def caption_loss(logits: torch.Tensor, aux: dict[str, torch.Tensor], tokens: torch.Tensor,
                 recipe: CaptionerRecipe) -> torch.Tensor:
    """Cross-entropy over real target tokens + the decoder's auxiliary losses, weighted as the recipe says."""
    target = tokens[:, 1:]
    # in fp32 even under bf16 autocast: a softmax over thousands of words in 8 mantissa bits is too coarse
    ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD_ID,
                         label_smoothing=recipe.label_smoothing)
    if "attention" not in aux:
        return ce
    extra = recipe.alpha_c * aux["attention"]
    if "attributes" in aux:
        extra = extra + recipe.attribute_weight * aux["attributes"]
    return ce + extra


class PairDataset(Dataset):
    """Training examples as a list: (image row, caption ids), or (image row, all its captions) when grouped."""

    def __init__(self, pairs: list[tuple[int, list]]):
        self.pairs = pairs

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[int, list]:
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
    # A cache of the whole dataset serves any split, so one encoding pass feeds training and evaluation.
    cache = encode_dataset(model.config.encoder, dataset, images=images, grid=model.config.uses_grid,
                           cache_dir=cache_dir, progress=progress)
    pooled = cache.pooled_for(images).half()
    grid = cache.grid_for(images).half() if model.config.uses_grid else None
    sha = cache.encoder.get("weights_sha256") or ""
    if not model.config.encoder_weights_sha256:
        model.config.encoder_weights_sha256 = sha
    elif sha and sha != model.config.encoder_weights_sha256:
        raise I2TError(f"the cached {model.config.encoder} features come from other weights than the captioner's")
    return FeatureSource(images, pooled=pooled, grid=grid)


def build_model(recipe: CaptionerRecipe, vocab: Vocabulary, start: Captioner | None) -> Captioner:
    """The model a run trains: the recipe's named network (fresh), or `start`'s network, weights and decoding
    settings (--init-from), with the recipe's few network choices on top; its encoder attached when it trains."""
    overrides = {k: v for k in ("dropout", "attribute_words") if (v := getattr(recipe, k)) is not None}
    if start is None:
        cfg = captioner_config(recipe.model, vocab_size=len(vocab), **overrides, **({"embed_dim": 50} if recipe.glove
                                                                                     else {}))
    else:
        if recipe.glove:  # its weights must fit: refuse in one line instead of a failed load further on
            raise I2TError("--glove cannot change when a run starts from --init-from (the network is kept)")
        cfg = replace(start.config, **overrides)
    if cfg.feature_dim <= 0:
        cfg.feature_dim = encoder_spec(cfg.encoder).num_features
    random_init = encoder_spec(cfg.encoder).random_init
    # the encoder runs on every batch when it trains (from scratch, small_cnn, or its last blocks fine-tuned), and
    # when the starting model stores one: a fine-tuned encoder kept frozen has no feature cache, and dropping it would
    # pair the decoder with the ImageNet weights it was moved from
    cfg.store_encoder = random_init or recipe.encoder_trainable_blocks > 0 or cfg.store_encoder
    model = Captioner(cfg, vocab, None if start is None else replace(start.settings))
    start_encoder = start is not None and start.config.store_encoder
    if cfg.store_encoder:
        # a starting model that stores its encoder brings the weights: the pretrained file is then not needed
        model.attach_encoder(create_encoder(cfg.encoder, pretrained=not random_init and not start_encoder,
                                            trainable_blocks=1000 if random_init else recipe.encoder_trainable_blocks))
    if start is not None:
        # checkpoint_state() holds the stored encoder's weights too, so this one load fills the encoder as well
        missing, unexpected = model.load_state_dict(start.checkpoint_state(), strict=False)
        # a word detector added to a model without one starts untrained
        added = ("decoder.attr_",) if cfg.attribute_words and not start.config.attribute_words else ()
        missing = [k for k in missing if not k.startswith(added)] if added else missing
        if [k for k in missing if start_encoder or not k.startswith("encoder.")] or unexpected:
            raise I2TError("--init-from: weights do not fit the model built from its own config")
    return model


class CaptionerTask(TrainTask):
    kind = "captioner"
    main_metric = "bleu4"

    def __init__(self, recipe: CaptionerRecipe, dataset: CaptionDataset, init_from: str | None = None,
                 vocab: Vocabulary | None = None, sources: dict[str, FeatureSource] | None = None,
                 cache_dir: str | None = None):
        """`sources` ("train", optional "val"): precomputed inputs to use instead of the feature cache; training
        then uses only the images they hold."""
        if recipe.exclude_words:  # held-out objects (DCC): their captions never reach training or the vocabulary
            dataset = without_words(dataset, recipe.exclude_words)
        self.recipe, self.dataset = recipe, dataset
        train_imgs = dataset.split("train")
        if sources is not None:
            train_imgs = [im for im in train_imgs if im in sources["train"].row]
        start = load_captioner(init_from) if init_from else None
        self.vocab = start.vocab if start is not None else (
            vocab or Vocabulary.build(dataset.all_captions("train"), min_count=recipe.min_count))
        self.model = build_model(recipe, self.vocab, start)
        augment = parse_augment(recipe.augment)  # pictures change every epoch: the encoder must see each batch's
        if augment.enabled and (not self.model.config.store_encoder or recipe.group_images or recipe.scst):
            raise I2TError("--augment needs an encoder that runs on every batch (small_cnn, or "
                           "--encoder-trainable-blocks N) and neither --group-images nor --scst")
        self.glove_report = None
        if recipe.glove:
            self.glove_report = self.model.decoder.embed.init_from_vectors(self.vocab, load_word_vectors(None))
        if sources is not None:
            self.train_src = sources["train"]
            self.val_src = sources.get("val")
            self.val_imgs = self.val_src.images if self.val_src is not None else []
        else:
            self.train_src = load_features(self.model, dataset, train_imgs, cache_dir, progress=True)
            val = dataset.splits.get("val", [])
            self.val_imgs = val[: recipe.val_images] if recipe.val_images else val
            self.val_src = (load_features(self.model, dataset, self.val_imgs, cache_dir, progress=True)
                            if self.val_imgs else None)
        L = self.model.config.max_len
        self.pairs = [(self.train_src.row[im], self.vocab.encode(c, max_len=L))
                      for im in train_imgs for c in dataset.captions.get(im, [])]
        self.groups = None  # grouped: one example per image row, holding all its captions (the pairs, regrouped)
        if recipe.group_images:
            by_row: dict[int, list[list[int]]] = {}
            for row, ids in self.pairs:
                by_row.setdefault(row, []).append(ids)
            self.groups = list(by_row.items())
        self.augmented = None
        if augment.enabled:
            texts = [c for im in train_imgs for c in dataset.captions.get(im, [])]
            self.augmented = AugmentedPairs([load_image(dataset.image_path(im)) for im in self.train_src.images],
                                            self.pairs, texts, self.model.ensure_encoder().transform(),
                                            augment, recipe.seed)

    def train_dataset(self) -> Dataset:
        if self.augmented is not None:
            return self.augmented
        return PairDataset(self.groups if self.groups is not None else self.pairs)

    def collate(self, items):
        if len(items[0]) == 3:  # augmented: each pair brings its own pixels
            return {"tokens": pad_batch([ids for _, ids, _ in items]), "images": torch.stack([x for *_, x in items])}
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
        return caption_loss(logits, aux, batch["tokens"], self.recipe), {}

    def sample_lengths(self) -> list[int] | None:
        # a grouped batch mixes lengths anyway; the decoders skip padding themselves (shrinking batches)
        return None if self.groups is not None else [len(ids) for _, ids in self.pairs]

    def tokens_in(self, batch) -> int:
        return int((batch["tokens"][:, 1:] != PAD_ID).sum())

    def evaluate(self, model) -> dict[str, float]:
        if self.val_src is None:
            return {}
        hyps = decode_source(self.model, self.val_src, beam_size=self.recipe.eval_beam)
        refs = [[tokenize(c) for c in self.dataset.captions[im]] for im in self.val_imgs]
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
    metric itself. Each training image gets `scst_samples` sampled captions, each rewarded with its CIDEr-D minus
    the mean reward of the image's other samples; the loss is -advantage * log-probability of the sampled words.

    Teacher forcing only ever shows the model gold prefixes; here it learns from its own, which is what it sees when
    it captions. The decoder samples with dropout off, as it decodes at test time."""

    def __init__(self, recipe: CaptionerRecipe, dataset: CaptionDataset, init_from: str | None = None, **kw):
        if not init_from:
            raise I2TError("self-critical training starts from a trained captioner: pass --init-from RUN")
        super().__init__(recipe, dataset, init_from, **kw)
        self.train_imgs = list(self.train_src.images)
        self.refs = [[tokenize(c) for c in self.dataset.captions.get(im, [])] for im in self.train_imgs]
        self.cider = CiderD(self.refs)

    def train_dataset(self) -> Dataset:
        return PairDataset([(i, []) for i in range(len(self.train_imgs))])

    def collate(self, items):
        rows = torch.tensor([r for r, _ in items], dtype=torch.long)
        return {"rows": rows, **self.train_src.batch(rows)}

    def sample_lengths(self) -> None:
        return None

    def tokens_in(self, batch) -> int:
        return 0

    def loss(self, model, batch):
        m = self.model
        m.decoder.eval()
        if "images" in batch:  # an end-to-end encoder (shapes, fine-tuned) trains along
            pooled, grid = m.encoder(batch["images"])
        else:
            pooled, grid = batch["pooled"], batch.get("grid")
        n = self.recipe.scst_samples
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


def train_captioner(recipe: CaptionerRecipe, cfg: TrainConfig, dataset: CaptionDataset | str = "flickr8k", *,
                    data_dir: str | None = None, init_from: str | None = None,
                    sources: dict[str, FeatureSource] | None = None, cache_dir: str | None = None) -> dict:
    """Train a captioner; returns the engine's summary plus the model's size, GloVe coverage and the run's parents
    (the --init-from checkpoint), which `i2t ship` records."""
    seed_everything(cfg.seed)
    t0 = time.time()
    ds = dataset if isinstance(dataset, CaptionDataset) else load_dataset(dataset, data_dir)
    task = (SCSTTask if recipe.scst else CaptionerTask)(recipe, ds, init_from, sources=sources, cache_dir=cache_dir)
    prep = time.time() - t0
    summary = fit(task, cfg)
    summary.update({"model": recipe.model if init_from is None else None,
                    "decoder_parameters": task.model.num_decoder_parameters,
                    "train_images": len(task.train_src), "val_images": len(task.val_imgs),
                    "vocab_size": len(task.vocab), "train_pairs": len(task.pairs), "prepare_seconds": round(prep, 1),
                    "glove": task.glove_report, "config": config_to_dict(task.model.config),
                    "recipe": config_to_dict(recipe), "parents": [str(init_from)] if init_from else [],
                    "objective": "scst-cider-d" if recipe.scst else "cross-entropy", "data": ds.provenance()})
    return summary


def evaluate_captioner(model: Captioner, data: str | CaptionDataset = "flickr8k", split: str = "test",
                       beam_size: int | None = None, coco: bool = True, data_dir: str | None = None,
                       limit: int | None = None, cache_dir: str | None = None, examples: int = 5) -> dict:
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
                 "beam": model.settings.beam_size if beam_size is None else beam_size,
                 "length_alpha": model.settings.length_alpha, "open_vocab": model.settings.open_vocab,
                 "say_once": model.settings.say_once}
    out.update(corpus_bleu_scores([[tokenize(c) for c in r] for r in refs_raw], [h.tokens for h in hyps]))
    if coco:
        out.update(coco_scores(refs_raw, [h.text for h in hyps]))
    out["decode_images_per_s"] = round(len(imgs) / max(secs, 1e-9), 1)
    out["examples"] = [{"image": im, "caption": h.text, "reference": r[0]}
                       for im, h, r in list(zip(imgs, hyps, refs_raw))[:examples]]
    return out
