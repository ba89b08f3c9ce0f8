"""Training the text-to-image generators with the shared engine (`engine.fit`).

A training item is one image at the model's size with ONE of its captions, picked at random from (seed, epoch,
index) so a resumed run sees the same captions as an uninterrupted one. Images are decoded and resized once and kept
in memory as uint8 (Flickr8k train at 64x64 is ~75 MB), because re-decoding 224x224 JPEGs every step would cost
more CPU than the model.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from img2text2img.errors import I2TError
from img2text2img.models.generator import Generator, PromptWarning, save_grid
from img2text2img.train.engine import StepContext, TrainConfig, TrainTask
from img2text2img.vocab import PAD_ID, Vocabulary, pad_batch

# The mean sentence that guidance pushes away from (Generator._decode) is that of the first caption of each of the
# first this many training pictures: enough for a stable mean, cheap to refit at every checkpoint.
MEAN_SENTENCE_PICTURES = 2000

# Fixed prompts drawn at every checkpoint so a person can watch a run improve.
SAMPLE_PROMPTS = {
    "shapes": [
        "a large red circle in the top left",
        "a large blue square in the center",
        "a small green triangle on the right",
        "a large yellow star at the bottom",
        "a large purple diamond on a white background",
        "a small orange cross in the bottom right",
        "a large pink circle to the left of a large cyan square",
        "a small red star above a small blue circle",
    ],
    "flickr8k": [
        "a dog runs through the grass",
        "a man riding a bike on a dirt road",
        "two children playing on the beach",
        "a black dog jumping into the water",
        "a group of people standing in the snow",
        "a girl in a pink dress",
        "a surfer riding a wave",
        "a brown dog biting a stick",
    ],
}


def sample_prompts(data: str) -> list[str]:
    return SAMPLE_PROMPTS["flickr8k" if str(data) == "flickr8k" else "shapes"]


@dataclass
class ImageCaptions:
    """A split held in memory: images uint8 [N, 3, S, S] and, per image, its captions as id lists."""

    images: torch.Tensor
    captions: list[list[list[int]]]
    names: list[str]


def load_image_captions(ds, split: str, vocab: Vocabulary, image_size: int = 64, limit: int | None = None,
                        max_tokens: int = 40) -> ImageCaptions:
    """Decode, resize (box filter, i.e. area averaging) and keep a split of a `CaptionDataset`."""
    from PIL import Image

    from img2text2img.data import load_image

    names = [n for n in ds.split(split) if ds.captions.get(n)]
    if limit:
        names = names[:limit]
    if not names:
        raise I2TError(f"dataset {ds.name} has no captioned images in split {split!r}")
    arr = np.empty((len(names), image_size, image_size, 3), dtype=np.uint8)
    for i, n in enumerate(names):
        im = load_image(ds.image_path(n))
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BOX)
        arr[i] = np.asarray(im)
    caps = [[vocab.encode(c, max_len=max_tokens) for c in ds.captions[n]] for n in names]
    return ImageCaptions(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), caps, names)


class ImageCaptionDataset(Dataset):
    """Item i = (image i as float [3, S, S] in [0, 1], one of its captions as ids), the caption chosen by
    (seed, epoch, i); `hflip` mirrors images at random (off for shapes, whose captions say left and right)."""

    def __init__(self, data: ImageCaptions, seed: int = 0, hflip: bool = False):
        self.data, self.seed, self.hflip, self.epoch = data, seed, hflip, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.captions)

    def __getitem__(self, i: int):
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
        ids = rng.choice(self.data.captions[i])
        img = self.data.images[i].float() / 255.0
        if self.hflip and rng.random() < 0.5:
            img = img.flip(-1)
        return img, ids


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """[(image [3, S, S], ids)] -> (ids [B, T], images [B, 3, S, S])."""
    images = torch.stack([im for im, _ in items])
    return pad_batch([ids for _, ids in items]), images


class _FrozenReader(torch.nn.Module):
    """A frozen network that reads the generator's drawings: it keeps its encoder's input size and normalisation
    and stays in eval mode (BatchNorm statistics and dropout fixed) whatever the surrounding training does."""

    def __init__(self, preprocess, size: int | None = None):
        super().__init__()
        self.size = size or preprocess.image_size
        self.register_buffer("mean", torch.tensor(preprocess.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(preprocess.std).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        return super().train(False)

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] -> the encoder's input size and normalisation (differentiable)."""
        import torch.nn.functional as F

        if images.shape[-1] != self.size:
            images = F.interpolate(images, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (images - self.mean) / self.std


class CaptionCritic(_FrozenReader):
    """Redescription loss (the idea of MirrorGAN): a frozen captioner reads the drawn picture, and the loss is its
    teacher-forced cross-entropy of the prompt.

    Pixel and KL losses only say "be close to the training photo"; a blob and a star cost about the same pixels, so
    the decoder never has to commit to a shape. A captioner that has learned star vs diamond gives exactly that
    signal. Its weights are frozen and it is never saved with the generator. Judge the result with a *different*
    captioner: scored by its own critic, a generator can learn that reader's quirks instead of drawing better."""

    def __init__(self, captioner, vocab: Vocabulary, weight: float = 0.1, shift: float = 4.0, target: str = "posterior",
                 tv_weight: float = 0.0):
        if target not in ("prior", "posterior"):
            raise I2TError(f"critic target must be prior or posterior, not {target!r}")
        super().__init__(captioner.ensure_encoder().preprocess)
        self.weight, self.shift, self.target = float(weight), float(shift), target
        self.tv_weight = float(tv_weight)  # total-variation penalty on the images the critic reads (see Generator)
        self.captioner = captioner.eval().requires_grad_(False)
        # generator word id -> captioner word id (the specials share ids 0..3; unknown words become <unk>)
        self.register_buffer("lookup", torch.tensor([captioner.vocab.id(w) for w in vocab.itos]))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        import torch.nn.functional as F

        if self.shift > 0:
            # Read a randomly shifted copy (up to `shift` pixels, sub-pixel, per image; differentiable): a drawing
            # must stay readable wherever it is nudged, which a pixel-grid pattern that fools the reader does not
            # (without this, a dotted lattice that the reader likes appears within a few hundred steps).
            B, W = images.shape[0], images.shape[-1]
            t = (torch.rand(B, 2, device=images.device) * 2 - 1) * (2 * self.shift / W)
            theta = torch.zeros(B, 2, 3, device=images.device, dtype=images.dtype)
            theta[:, 0, 0] = theta[:, 1, 1] = 1
            theta[:, :, 2] = t
            grid = F.affine_grid(theta, list(images.shape), align_corners=False)
            images = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
        tokens = self.lookup[ids]
        logits, _ = self.captioner(tokens, images=self.encoder_input(images))
        target = tokens[:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD_ID)


class FeatureLoss(_FrozenReader):
    """Perceptual term: how far a frozen encoder's activations of the drawing are from those of the real image.

    A blob and a star cost about the same in pixels; a network that has learned to tell them apart (the encoder of
    a shapes captioner, an ImageNet CNN for photos) sees the difference in its activations. Each block's output is
    unit-normalised over channels at every position (as LPIPS does, so no layer dominates by scale) and the squared
    distance is averaged over positions and blocks. Anchored to the real image, it cannot be satisfied by a texture
    the way a caption reader can. Frozen, eval mode, never saved with the generator.

    `size` is the side the drawing is resized to before the encoder reads it (default: the encoder's own input
    size). A 64 px drawing holds no more detail at 224 px, and on a CPU the encoder's cost grows with the square of
    the side, so photos train several times faster at 112-128 px."""

    def __init__(self, encoder, weight: float = 1.0, blocks: int | None = None, size: int | None = None):
        super().__init__(encoder.preprocess, size)
        self.weight = float(weight)
        self.encoder = encoder.eval().requires_grad_(False)
        self.blocks = encoder.blocks[:blocks] if blocks else encoder.blocks

    def forward(self, drawn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        acts: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda _m, _i, out: acts.append(out)) for b in self.blocks]
        try:
            self.encoder.feature_map(self.encoder_input(torch.cat([drawn, real])))
        finally:
            for h in hooks:
                h.remove()
        n = drawn.shape[0]
        total = drawn.new_zeros(())
        for a in acts:
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)
            total = total + (a[:n] - a[n:].detach()).pow(2).sum(1).mean()
        return total / max(len(acts), 1)


def feature_loss(source: str | Path, weight: float = 1.0, size: int | None = None) -> FeatureLoss:
    """A `FeatureLoss` on an encoder by name (`mobilenet_v2`, with its pretrained weights) or on the encoder of a
    captioner checkpoint (e.g. one trained on the shapes set, which knows a star from a diamond)."""
    from img2text2img.models.encoders import ENCODERS, create_encoder

    if str(source) in ENCODERS.names():
        return FeatureLoss(create_encoder(str(source), pretrained=True), weight, size=size)
    from img2text2img.models.captioner import load_captioner

    return FeatureLoss(load_captioner(source).ensure_encoder(), weight, size=size)


class GeneratorTask(TrainTask):
    """pixel / vae: one optimizer on the pixel (+ KL) loss; gan: alternating discriminator and generator steps."""

    kind = "generator"
    main_metric = None  # a generator's quality is judged from samples and the round trip, not one val number

    def __init__(self, model: Generator, train: ImageCaptions, val: ImageCaptions | None = None, seed: int = 0,
                 hflip: bool = False, prompts: list[str] | None = None, d_lr_mult: float = 1.0,
                 critic: CaptionCritic | None = None, perceptual: FeatureLoss | None = None):
        self.model, self.vocab = model, model.vocab
        self.critic, self.perceptual = critic, perceptual
        self.train, self.val, self.seed, self.hflip = train, val, seed, hflip
        self.prompts = prompts or SAMPLE_PROMPTS["shapes"]
        # what the mean sentence is fitted to at each checkpoint (fit_sentence_mean_from fits the same captions)
        self.mean_ids = pad_batch([c[0] for c in train.captions[:MEAN_SENTENCE_PICTURES]])
        self.d_lr_mult = d_lr_mult

    def train_dataset(self) -> Dataset:
        return ImageCaptionDataset(self.train, self.seed, self.hflip)

    def collate(self, items: list):
        return collate(items)

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        m = self.model
        def disc() -> torch.optim.Optimizer:  # DCGAN practice: beta1 = 0.5 for the discriminator (and a gan's generator)
            return torch.optim.Adam(m.discriminator.parameters(), lr=cfg.lr * self.d_lr_mult, betas=(0.5, 0.999))

        if m.config.kind == "gan":
            return {"gen": torch.optim.Adam(m.generator_parameters(), lr=cfg.lr, betas=(0.5, 0.999)), "disc": disc()}
        main = {"main": torch.optim.AdamW(m.generator_parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}
        return {**main, "disc": disc()} if m.config.adv_weight > 0 else main

    def loss(self, model, batch):
        ids, images = batch
        _, loss, logs = model(ids, images)
        return loss, logs

    def training_step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        ids, images = batch
        m = getattr(ctx.model, "module", ctx.model)
        for extra in (self.critic, self.perceptual):
            if extra is not None:
                extra.to(ids.device)
        terms = {"critic": self.critic, "perceptual": self.perceptual}
        if m.config.kind != "gan" and m.config.adv_weight > 0:
            # VAE-GAN: the discriminator judges both the reconstruction and a drawing from the prior; pixel and KL
            # terms keep the content, the adversarial term asks for the crisp corners and points that a blur lacks.
            fake, loss, logs, prior_fake = ctx.model(ids, images, step, return_prior=True, **terms)
            d_loss, g_fn = m.adversarial_losses(ids, images, torch.cat([fake, prior_fake]), torch.cat([ids, ids]))
            ctx.backward_step(d_loss, "disc")
            g_adv, adv_logs = g_fn()
            loss = loss + m.config.adv_weight * g_adv
            ctx.backward_step(loss, "main")
            return {"loss": float(loss.detach()), **logs, **adv_logs}
        if m.config.kind != "gan":
            _, loss, logs = ctx.model(ids, images, step, **terms)
            ctx.backward_step(loss, "main")
            return {"loss": float(loss.detach()), **logs}
        z = torch.randn(ids.shape[0], m.config.z_dim, device=ids.device)
        d_loss, g_fn = m.gan_losses(ids, images, z)
        ctx.backward_step(d_loss, "disc")
        g_loss, logs = g_fn()
        ctx.backward_step(g_loss, "gen")
        return {"loss": float(g_loss.detach()), **logs}

    def evaluate(self, model) -> dict[str, float]:
        """Mean pixel MSE on (up to 256) validation images, drawing from z = 0: a cheap trend line, nothing more."""
        if self.val is None:
            return {}
        n = min(256, len(self.val.captions))
        ids = pad_batch([c[0] for c in self.val.captions[:n]])
        dev = next(model.parameters()).device
        fake, _, _ = model(ids.to(dev))
        real = self.val.images[:n].float().to(dev) / 255.0
        return {"val_mse": float(((fake - real) ** 2).mean())}

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        # Every checkpoint carries the mean sentence of its own text encoder, so guidance works on any of them
        # (Generator._decode); it is never trained on, so fitting it here changes nothing in the run.
        self.model.fit_sentence_mean(self.mean_ids)
        return self.model.state_dict()

    def on_checkpoint(self, path: Path, step: int) -> None:
        write_samples(self.model, self.prompts, path, step)


def fit_sentence_mean_from(model: Generator, data: str, data_dir: str | Path | None = None,
                           n: int = MEAN_SENTENCE_PICTURES) -> torch.Tensor:
    """Fit `model.sentence_mean` (what guidance pushes away from) to the first caption of the first `n` training
    pictures of `data`, the captions a training run fits it to (`GeneratorTask.checkpoint_state`); for a generator
    saved before checkpoints carried one."""
    from img2text2img.data import load_dataset

    ds = load_dataset(data, data_dir)
    firsts = [ds.captions[im][0] for im in list(ds.split("train"))[:n] if ds.captions.get(im)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        return model.fit_sentence_mean(model.prompt_ids(firsts))


def guide(model: Generator, guidance: float, data: str, data_dir: str | Path | None = None) -> Generator:
    """`model.guided(guidance)`; a generator saved before checkpoints carried a mean sentence first gets one from
    `data`'s training captions (`fit_sentence_mean_from`), as its training run would have fitted it."""
    if not isinstance(model, Generator):
        return model.guided(guidance)  # (a scene generator: says it has no guidance)
    if guidance != 1.0 and not bool(model.sentence_mean.any()):
        fit_sentence_mean_from(model, data, data_dir)
    return model.guided(guidance)


def write_samples(model, prompts: list[str], path: Path, step: int) -> None:
    """The fixed prompts drawn twice each, beside the checkpoint and in the run's samples/ (one PNG per step), so a
    person can watch a run learn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        images = model.generate(prompts, n=2, seed=0)
    save_grid(images, Path(path) / "samples.png", ncol=4, scale=2)
    save_grid(images, Path(path).parent / "samples" / f"step{step:06d}.png", ncol=4, scale=2)


class SceneCaptions(Dataset):
    """Item i = (one of picture i's captions as ids, picture i's scene tokens), the caption chosen by (seed, epoch,
    i) so that a resumed run sees the same order."""

    def __init__(self, captions: list[list[list[int]]], scenes: list[list[int]], seed: int = 0):
        self.captions, self.scenes, self.seed, self.epoch = captions, scenes, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int):
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
        return rng.choice(self.captions[i]), self.scenes[i]


class SceneTask(TrainTask):
    """A scene generator: the writer learns, by cross-entropy, the scenes its picture reader found in the training
    pictures (`models/scene_generator.py`)."""

    kind = "generator"
    main_metric = None

    def __init__(self, model, captions: list[list[list[int]]], scenes: list[list[int]], seed: int = 0,
                 prompts: list[str] | None = None):
        self.model, self.vocab = model, model.vocab
        self.data = SceneCaptions(captions, scenes, seed)
        self.prompts = prompts or SAMPLE_PROMPTS["shapes"]

    def train_dataset(self) -> Dataset:
        return self.data

    def collate(self, items: list):
        return pad_batch([ids for ids, _ in items]), [scene for _, scene in items]

    def loss(self, model, batch):
        ids, scenes = batch
        return model(ids, scenes), {}

    def on_checkpoint(self, path: Path, step: int) -> None:
        write_samples(self.model, self.prompts, path, step)


def train_scene_generator(preset: str, data: str, cfg: TrainConfig, *, data_dir: str | Path | None = None,
                          limit: int | None = None, fit_pictures: int = 3000, **overrides) -> dict:
    """Fit the picture reader (palette, templates) on the first `fit_pictures` training pictures, read every training
    picture as a scene, and train the scene writer on (caption, scene) pairs. On `cfg.resume` the reader comes back
    from `out/last` with the writer, so the scenes are read exactly as before."""
    from img2text2img.checkpoint import load_checkpoint
    from img2text2img.data import load_dataset
    from img2text2img.models.scene_generator import SceneGenerator, scene_config
    from img2text2img.train.engine import fit, seed_everything

    seed_everything(cfg.seed)
    ds = load_dataset(data, data_dir)
    last = Path(cfg.out) / "last"
    resuming = cfg.resume and (last / "config.json").exists()
    if resuming:
        model = SceneGenerator.from_checkpoint(load_checkpoint(last, kind="generator")).train()
    else:
        vocab = Vocabulary.build(ds.all_captions("train"), min_count=1 if ds.name == "shapes" else 5, max_size=8000)
        model = SceneGenerator(scene_config(preset, vocab_size=len(vocab), **overrides), vocab=vocab)
    train = load_image_captions(ds, "train", model.vocab, model.config.image_size, limit, model.config.max_tokens)
    if not resuming:
        model.picture.fit(train.images[:fit_pictures], seed=cfg.seed)
    scenes = []
    for i in range(0, len(train.images), 1000):
        scenes += model.picture.parse(train.images[i:i + 1000])
    summary = fit(SceneTask(model, train.captions, scenes, cfg.seed, sample_prompts(data)), cfg)
    summary["objects_per_picture"] = sum((len(s) - 2) // 5 for s in scenes) / max(len(scenes), 1)
    return summary


# Config fields a run started with `init_from` may change: each adds a part that starts neutral (the learned prior
# as N(0, I), a fresh discriminator), replaces only the last layer (a palette output head, fitted palette), or
# re-sizes the decoder (wider late stages, refining blocks: every decoder tensor that still fits is kept, the rest
# start fresh), so the trained text encoder, image encoder and prior stay valid.
_OUTPUT_FIELDS = ("output", "palette_size")  # a change to either means a new output head (and palette)
_DECODER_FIELDS = ("channels", "refine", "decoder", "layers", "ordinal", "window", "masks", "sprites", "word_attention")
_EXTENSIONS = ("prior", "adv_weight", *_OUTPUT_FIELDS, *_DECODER_FIELDS)
_OUTPUT_HEAD = ("decoder.to_rgb.", "palette")
_POSTERIOR = ("image_encoder.", "posterior.")  # a VAE's image -> code network: training runs only
# how the loss is taken, not the network: a run started from another may change these
_LOSS_WEIGHTS = ("beta", "z_dropout", "sentence_dropout", "shift_tolerance", "count_weight")


def _extend(model: Generator, ck, changes: dict) -> Generator:
    """`model` (loaded from `ck`) with `changes` to its `_EXTENSIONS` fields: new parts fresh, the rest as trained."""
    from dataclasses import replace

    changes = {k: tuple(v) if isinstance(v, list) else v for k, v in changes.items()}
    changes = {k: v for k, v in changes.items() if getattr(model.config, k) != v}
    if not changes:
        return model
    extended = Generator(replace(model.config, **changes), vocab=model.vocab).train()
    state = ck.state_dict
    new_head = set(_OUTPUT_FIELDS) & set(changes)
    if new_head:  # the decoder's features are kept; the layer that turns them into colours starts afresh
        state = {k: v for k, v in state.items() if not k.startswith(_OUTPUT_HEAD)}
    resized = bool(set(_DECODER_FIELDS) & set(changes))
    if resized:  # the early stages usually still fit (they carry where and what); wider ones learn again
        fits = extended.state_dict()
        state = {k: v for k, v in state.items()
                 if not k.startswith("decoder.") or (k in fits and fits[k].shape == v.shape)}
    missing, unexpected = extended.load_state_dict(state, strict=False)
    # A new kind of decoder reads the code afresh, so a drawing-only checkpoint (no image encoder) may start one:
    # what it keeps is the text encoder and the learned prior.
    fresh = (("prior_net.", "discriminator.", "sentence_mean") + (_OUTPUT_HEAD if new_head else ()) + (("decoder.",) if resized else ())
             + (_POSTERIOR if "decoder" in changes else ()))
    kept = [k for k in missing if not k.startswith(fresh)]
    if kept or unexpected:
        raise I2TError(f"cannot change {', '.join(changes)} of {ck.path}: weights do not fit "
                       f"(missing {kept[:3]}, unexpected {unexpected[:3]})")
    return extended


def train_generator(kind_or_preset: str, data: str, cfg: TrainConfig, *, data_dir: str | Path | None = None,
                    limit: int | None = None, glove: bool = False, hflip: bool | None = None,
                    init_from: str | Path | None = None, critic: str | Path | None = None, critic_weight: float = 0.1,
                    critic_shift: float = 4.0, critic_target: str = "posterior", critic_tv: float = 0.0,
                    perceptual: str | Path | None = None, perceptual_weight: float = 1.0,
                    perceptual_size: int | None = None, **overrides) -> dict:
    """Build vocabulary, model and data for `data` (shapes[:N], flickr8k, or a folder) and run `fit`.

    On `cfg.resume` the vocabulary and config come from `out/last` so the run continues with the same model.
    `init_from` starts a fresh run from another run's weights (its config and vocabulary; `kind_or_preset` must name
    the same kind, or pixel to continue a VAE without its latent code, `Generator.without_latent`); `critic` adds
    the redescription loss of that captioner checkpoint (`CaptionCritic`)."""
    from img2text2img.checkpoint import load_checkpoint
    from img2text2img.config import config_from_dict
    from img2text2img.data import load_dataset
    from img2text2img.models.generator import GeneratorConfig, generator_config
    from img2text2img.train.engine import fit, seed_everything

    if kind_or_preset.startswith("scene"):
        unused = sorted(k for k, v in {"glove": glove, "hflip": hflip, "init_from": init_from, "critic": critic,
                                        "perceptual": perceptual, **overrides}.items() if v not in (None, False))
        if unused:
            raise I2TError(f"a scene generator takes none of: {', '.join('--' + k.replace('_', '-') for k in unused)}")
        return train_scene_generator(kind_or_preset, data, cfg, data_dir=data_dir, limit=limit)
    seed_everything(cfg.seed)  # the model's random init must depend on the seed alone (reproducible runs)
    if overrides.get("decoder") == "layers":
        overrides["word_attention"] = 0  # its slots take their words themselves (LayeredDecoder)
    ds = load_dataset(data, data_dir)
    last = Path(cfg.out) / "last"
    resuming = cfg.resume and (last / "config.json").exists()
    if resuming:
        ck = load_checkpoint(last, kind="generator")
        model = Generator(config_from_dict(GeneratorConfig, ck.config), vocab=ck.vocab)
    elif init_from is not None:
        from img2text2img.models import resolve_checkpoint_dir

        ck = load_checkpoint(resolve_checkpoint_dir(init_from), kind="generator")
        model = Generator.from_checkpoint(ck).train()
        preset = generator_config(kind_or_preset)
        wanted, gained = preset.kind, False
        if model.config.kind == "vae" and wanted == "pixel":
            model = model.without_latent()  # the VAE's drawing at z = 0, trained on to read the layout from text
        elif model.config.kind == "pixel" and wanted == "vae":
            # the pixel model's drawing, for any z, with a fresh code for what the sentence leaves open
            model = model.with_latent(overrides.get("z_dim") or preset.z_dim, overrides.get("prior") or "standard")
            model.config.kl_warmup, gained = preset.kl_warmup, True
        if model.config.kind != wanted:
            raise I2TError(f"{init_from} is a {model.config.kind} generator, not {kind_or_preset}")
        if not gained:
            new_decoder = overrides.get("decoder") not in (None, model.config.decoder)
            if model.config.kind != "pixel" and len(ck.state_dict) < len(model.state_dict()) and not new_decoder:
                raise I2TError(f"{init_from} holds drawing weights only; start from a training run's last/ checkpoint"
                               " (or replace its decoder with --decoder, which starts the image encoder afresh too)")
            model = _extend(model, ck, {k: overrides[k] for k in _EXTENSIONS if overrides.get(k) is not None})
            # the KL weight was already warmed up in the run this starts from, unless its code starts afresh here
            fresh_code = not any(k.startswith(_POSTERIOR) for k in ck.state_dict)
            model.config.kl_warmup = preset.kl_warmup if fresh_code else 0
        # loss weights, not parts of the network: a continued run may change them (replace re-checks the config)
        weights = {k: type(getattr(model.config, k))(overrides[k]) for k in _LOSS_WEIGHTS if overrides.get(k) is not None}
        if weights:
            from dataclasses import replace

            model.config = replace(model.config, **weights)
    else:
        vocab = Vocabulary.build(ds.all_captions("train"), min_count=1 if ds.name == "shapes" else 5, max_size=8000)
        overrides.setdefault("embed_dim", 50 if glove else None)
        # Shapes pictures are mostly plain background: weigh the shapes' pixels up (see Generator._recon).
        overrides.setdefault("fg_weight", 4.0 if ds.name == "shapes" else None)
        overrides = {k: v for k, v in overrides.items() if v is not None}
        model = Generator(generator_config(kind_or_preset, vocab_size=len(vocab), **overrides), vocab=vocab)
        if glove:
            from img2text2img.vocab import load_word_vectors

            model.text.embed.init_from_vectors(vocab, load_word_vectors())
    if overrides.get("beta") is not None and model.config.kind != "vae":
        raise I2TError(f"--beta weighs a vae's KL term; a {model.config.kind} generator has none")
    if resuming or init_from is not None:
        # A continued run keeps its network (a resumed one its whole config; --init-from may add the parts _extend
        # adds and change _LOSS_WEIGHTS): refuse an option that would otherwise be dropped without a word.
        ignored = sorted(k for k, v in overrides.items() if v is not None and getattr(model.config, k) != v)
        if ignored:
            names = ", ".join("--" + k.replace("_", "-") for k in ignored)
            raise I2TError(f"{names} cannot change when a run " + ("resumes (its saved config is kept)" if resuming
                           else "starts from --init-from (the network is kept)"))
    size = model.config.image_size
    train = load_image_captions(ds, "train", model.vocab, size, limit, model.config.max_tokens)
    new_head = init_from is None or any(ck.config.get(f) != getattr(model.config, f) for f in _OUTPUT_FIELDS)
    if model.config.output == "palette" and not resuming and new_head:  # a kept palette head keeps its palette
        from img2text2img.models.generator import fit_palette

        model.palette.copy_(fit_palette(train.images, model.config.palette_size, seed=cfg.seed))
    if model.config.masks == "sprites" and not resuming and (init_from is None or ck.config.get("masks") != "sprites"):
        from img2text2img.models.generator import fit_sprites

        sprite = model.decoder.sprite
        with torch.no_grad():
            sprite.templates.copy_(fit_sprites(train.images, model.config.sprites, sprite.templates.shape[-1], cfg.seed))
    val = load_image_captions(ds, "val", model.vocab, size, 256, model.config.max_tokens) if "val" in ds.splits else None
    if hflip is None:
        hflip = ds.name != "shapes"
    reader, run_info = None, {}
    if critic is not None:
        from img2text2img.models import weights_sha256
        from img2text2img.models.captioner import load_captioner

        if model.config.kind == "gan":
            raise I2TError("--critic works with pixel and vae generators, not gan")
        reader = CaptionCritic(load_captioner(critic), model.vocab, critic_weight, critic_shift, critic_target,
                               critic_tv)
        # The reader by the weights read now: its folder may hold another captioner by the time anyone looks.
        run_info = {"critic": str(critic), "critic_weights_sha256": weights_sha256(critic),
                    "critic_weight": critic_weight, "critic_shift": critic_shift, "critic_target": critic_target,
                    "critic_tv": critic_tv}
    feats = None
    if perceptual is not None:
        if model.config.kind == "gan":
            raise I2TError("--perceptual works with pixel and vae generators, not gan")
        feats = feature_loss(perceptual, perceptual_weight, perceptual_size)
        run_info.update({"perceptual": str(perceptual), "perceptual_weight": perceptual_weight,
                         "perceptual_size": feats.size})
    task = GeneratorTask(model, train, val, seed=cfg.seed, hflip=hflip, prompts=sample_prompts(data), critic=reader,
                         perceptual=feats)
    summary = fit(task, cfg)
    summary.update({"init_from": str(init_from) if init_from else None, **run_info})
    return summary


def evaluate_generator(model: Generator | str | Path | None, data: str = "shapes:5000", split: str = "test",
                       n: int = 500, encoder: str = "mobilenet_v2", size: int | None = 128, seed: int = 0,
                       data_dir: str | Path | None = None, temperature: float | None = None, batch_size: int = 64,
                       guidance: float | None = None) -> dict:
    """Draw one image per test image (from its first caption) and compare the two sets in `encoder` features.

    Returns the Fréchet feature distance (lower = closer to the real images; NOT the standard FID), the mean cosine
    similarity of each drawn image to its own real image and to a random other real image (the gap says whether
    pictures follow their sentences), the pixel MSE to the real image, and the drawing speed."""
    import time

    from img2text2img.data import load_dataset
    from img2text2img.metrics.image import encoder_features, frechet_feature_distance, paired_cosine_similarity
    from img2text2img.models.encoders import create_encoder
    from img2text2img.models.generator import load_generator

    gen = load_generator(model)
    if guidance is not None:
        guide(gen, guidance, data, data_dir)
    ds = load_dataset(data, data_dir)
    real = load_image_captions(ds, split, gen.vocab, gen.config.image_size, n, gen.config.max_tokens)
    ids = pad_batch([c[0] for c in real.captions])
    t0 = time.time()
    fake = gen.generate(ids, n=1, seed=seed, temperature=temperature, batch_size=batch_size)
    draw_s = time.time() - t0
    real_f = real.images.float() / 255.0
    enc = create_encoder(encoder, pretrained=True)
    fr = encoder_features(real_f, enc, size=size)
    ff = encoder_features(fake, enc, size=size)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(fr), generator=g)
    return {
        "frechet_feature_distance": round(frechet_feature_distance(ff, fr), 3),
        "cosine_to_own_image": round(float(paired_cosine_similarity(ff, fr).mean()), 4),
        "cosine_to_other_image": round(float(paired_cosine_similarity(ff, fr[perm]).mean()), 4),
        "pixel_mse": round(float(((fake - real_f) ** 2).mean()), 5),
        "images": len(fr), "encoder": encoder, "encoder_input": size or enc.preprocess.image_size,
        "data": data, "split": split, "seed": seed, "temperature": gen.config.sample_temperature if temperature is None else temperature,
        "guidance": getattr(gen.config, "guidance", 1.0),
        "kind": gen.config.kind, "draw_images_per_s": round(len(fr) / max(draw_s, 1e-9), 1),
    }
