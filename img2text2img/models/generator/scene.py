"""Text-to-scene generator for flat-colour pictures (the shapes set): a sentence in, a short list of objects out,
each drawn as a sprite. In the spirit of Text2Scene (Tan et al., CVPR 2019), which writes a scene by placing clip-art
objects one at a time; here the clip art is learned from the training pictures.

Why a fourth kind beside pixel / vae / gan: those decoders must learn every outline at every place and size, and on a
CPU budget they draw blobs whose shapes a captioner misreads. A scene generator splits the job in two easy parts:

- `ScenePicture` (no gradient, fitted once): reads a picture as a background colour and a few objects, each a
  colour, a template mask, a centroid and a size. An object is a connected region away from the border colour; its
  alpha matte (how much of each pixel it covers, from the pixel's position between the background and object
  colours) is cut out in a frame set by its centroid and area, and the templates are k-means centres of those cuts.
  Cutting the matte rather than a thresholded mask matters: a template averaged from thresholded masks is fat and
  its star points are blunt, and the shapes captioner misread such re-drawings of real pictures far more often
  than re-drawings from mattes. The same class draws a scene back: each template is scaled, placed,
  thresholded at half coverage at 4x resolution and box-filtered, the way the dataset's own pictures are made.
- `ScenePrior`: the shared text encoder (SharedEmbedding -> 2-layer LSTM) read by a small transformer decoder that
  writes the scene autoregressively as tokens: background, then per object colour, template, x, y, size, then
  <end>. Sampling at a temperature below 1 picks the likelier layouts for what the sentence leaves open.

Only pictures made of flat colours on a flat background can be read this way; on photos (Flickr8k) use pixel / vae.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from img2text2img.checkpoint import Checkpoint, save_checkpoint
from img2text2img.config import check_seed, config_to_dict
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.models.generator.config import DrawSettings, SceneGeneratorConfig, load_config
from img2text2img.models.generator.fitting import (
    border_colour,
    components,
    cut_frames,
    farthest_point_kmeans,
    fit_palette,
    foreground,
    unit_float,
)
from img2text2img.models.generator.text import PromptedSampling, TextEncoder
from img2text2img.vocab import Vocabulary

# Sampling below temperature 1 picks the likelier layouts for what a sentence leaves open.
SCENE_SETTINGS = DrawSettings(temperature=0.5)


class SceneTokens:
    """The token layout of a scene: [background, (colour, template, x, y, size) * n, <end>], one vocabulary."""

    FIELDS = ("colour", "template", "x", "y", "size")

    def __init__(self, cfg: SceneGeneratorConfig):
        counts = {"background": cfg.colours, "colour": cfg.colours, "template": cfg.templates,
                  "x": cfg.positions, "y": cfg.positions, "size": cfg.sizes}
        self.offset, start = {}, 0
        for name, n in counts.items():
            self.offset[name] = start
            start += n
        self.counts = counts
        self.end = start
        self.n = start + 1  # tokens the writer can emit
        self.begin = self.n  # input-only start token
        self.length = 1 + 5 * cfg.max_objects + 1

    def allowed(self) -> torch.Tensor:
        """[length, n] bool: which tokens may come at each position (the writer's grammar)."""
        mask = torch.zeros(self.length, self.n, dtype=torch.bool)
        mask[0, self.offset["background"]:self.offset["background"] + self.counts["background"]] = True
        for t in range(1, self.length):
            field = self.FIELDS[(t - 1) % 5]
            if t < self.length - 1 or field != "colour":
                mask[t, self.offset[field]:self.offset[field] + self.counts[field]] = True
            if field == "colour":
                mask[t, self.end] = True
        return mask


class ScenePicture(nn.Module):
    """Pictures <-> scene token lists; its palette and templates are buffers fitted by `fit` (see module docstring)."""

    def __init__(self, cfg: SceneGeneratorConfig):
        super().__init__()
        self.cfg, self.tokens = cfg, SceneTokens(cfg)
        R = cfg.template_resolution
        self.register_buffer("palette", torch.zeros(cfg.colours, 3))
        self.register_buffer("templates", torch.zeros(cfg.templates, R, R))  # coverage in [0, 1]

    def fit(self, images: torch.Tensor, seed: int = 0) -> ScenePicture:
        """Palette and templates from training pictures ([N, 3, S, S], uint8 or [0, 1]); a few thousand suffice."""
        x = unit_float(images)
        palette = fit_palette(x, self.cfg.colours, seed=seed)
        # Each entry moved to the most common exact colour among the pixels it takes: k-means centres sit a little
        # towards the blended edge pixels, and re-drawn pictures should carry the dataset's own colours.
        px = (x.permute(0, 2, 3, 1).reshape(-1, 3) * 255).round()
        px = px[torch.randperm(len(px), generator=torch.Generator().manual_seed(seed))[:400_000]]
        owner = torch.cdist(px / 255, palette).argmin(1)
        for k in range(len(palette)):
            mine = px[owner == k]
            if len(mine):
                values, counts = mine.unique(dim=0, return_counts=True)
                palette[k] = values[counts.argmax()] / 255
        self.palette.copy_(palette)
        cuts = torch.stack([o[1] for _, objs in self._objects(x) for o in objs]).flatten(1)
        k = self.cfg.templates
        if len(cuts) < k:
            raise I2TError(f"only {len(cuts)} objects found in the training pictures; {k} templates need at least {k}")
        gen = torch.Generator().manual_seed(seed)
        self.templates.copy_(farthest_point_kmeans(cuts, k, gen, 15).view_as(self.templates))
        return self

    def _objects(self, x: torch.Tensor) -> list[tuple[torch.Tensor, list]]:
        """Per picture: (background colour [3], [(colour [3], matte cut [R, R], cx, cy, size)])."""
        R = self.cfg.template_resolution
        border = border_colour(x)
        labels = components(foreground(x))
        out = []
        for i in range(len(x)):
            objs = []
            for lab in labels[i].unique().tolist():
                region = labels[i] == lab
                if not lab or int(region.sum()) < self.cfg.min_pixels:
                    continue
                colour = x[i][:, region].median(1).values
                d = colour - border[i]
                near = F.max_pool2d(region.float()[None, None], 3, 1, 1)[0, 0] > 0  # the region and its rim
                alpha = ((x[i] - border[i][:, None, None]) * d[:, None, None]).sum(0) / d.pow(2).sum().clamp(min=1e-6)
                alpha = alpha.clamp(0, 1) * near
                cut, cx, cy, size = cut_frames(alpha[None], R)
                objs.append((colour, cut[0], float(cx), float(cy), float(size)))
            out.append((border[i], objs))
        return out

    def parse(self, images: torch.Tensor) -> list[list[int]]:
        """Pictures -> scene token lists (objects in reading order: by grid row, then left to right)."""
        cfg, tok = self.cfg, self.tokens
        flat = self.templates.flatten(1)
        seqs = []
        for background, objs in self._objects(unit_float(images)):
            found = []
            for colour, cut, cx, cy, size in objs:
                qx, qy = bin_index((cx + 1) / 2, cfg.positions), bin_index((cy + 1) / 2, cfg.positions)
                qs = bin_index((size - cfg.size_min) / (cfg.size_max - cfg.size_min), cfg.sizes)
                found.append((qy * 3 // cfg.positions, qx, qy, self._colour(colour),
                              int((flat - cut.flatten()).pow(2).sum(1).argmin()), qs))
            found.sort()
            seq = [tok.offset["background"] + self._colour(background)]
            for _, qx, qy, c, t, qs in found[:cfg.max_objects]:
                seq += [tok.offset["colour"] + c, tok.offset["template"] + t, tok.offset["x"] + qx,
                        tok.offset["y"] + qy, tok.offset["size"] + qs]
            seqs.append(seq + [tok.end])
        return seqs

    def _colour(self, rgb: torch.Tensor) -> int:
        return int((self.palette - rgb).pow(2).sum(1).argmin())

    def render(self, seqs: Sequence[Sequence[int]], supersample: int = 4) -> torch.Tensor:
        """Scene token lists -> pictures [B, 3, S, S] in [0, 1]. Tokens out of place end the scene there."""
        cfg, tok = self.cfg, self.tokens
        S = cfg.image_size * supersample
        dev = self.templates.device
        out = torch.empty(len(seqs), 3, S, S, device=dev)
        templates = self.templates.float()[:, None]
        for i, seq in enumerate(seqs):
            background = token_value(seq, 0, "background", tok)
            canvas = self.palette[0 if background is None else background].float().view(3, 1, 1).repeat(1, S, S)
            for t in range(1, len(seq) - 4, 5):
                values = [token_value(seq, t + j, name, tok) for j, name in enumerate(SceneTokens.FIELDS)]
                if any(v is None for v in values):
                    break
                colour, template, qx, qy, qs = values
                cx, cy = (qx + 0.5) / cfg.positions * 2 - 1, (qy + 0.5) / cfg.positions * 2 - 1
                size = cfg.size_min + (qs + 0.5) / cfg.sizes * (cfg.size_max - cfg.size_min)
                theta = torch.tensor([[[1 / size, 0, -cx / size], [0, 1 / size, -cy / size]]], device=dev)
                grid = F.affine_grid(theta, [1, 1, S, S], align_corners=False)
                cover = F.grid_sample(templates[template][None], grid, mode="bilinear", padding_mode="zeros",
                                      align_corners=False)[0, 0]
                canvas[:, cover > 0.5] = self.palette[colour].float().view(3, 1)
            out[i] = canvas
        return F.avg_pool2d(out, supersample) if supersample > 1 else out


class ScenePrior(nn.Module):
    """Sentence -> scene tokens: the shared text encoder's word states are the memory of a causal transformer."""

    def __init__(self, cfg: SceneGeneratorConfig):
        super().__init__()
        tok = SceneTokens(cfg)
        self.text = TextEncoder(cfg.vocab_size, cfg.embed_dim, cfg.text_hidden, cfg.text_layers)
        self.memory_in = nn.Linear(cfg.text_hidden, cfg.d_model)
        self.sentence_in = nn.Linear(2 * cfg.text_hidden, cfg.d_model)
        self.embed = nn.Embedding(tok.n + 1, cfg.d_model)
        self.position = nn.Parameter(torch.randn(tok.length, cfg.d_model) * 0.02)
        layer = nn.TransformerDecoderLayer(cfg.d_model, cfg.heads, 4 * cfg.d_model, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerDecoder(layer, cfg.layers)
        self.norm = nn.LayerNorm(cfg.d_model)
        self.head = nn.Linear(cfg.d_model, tok.n)
        self.register_buffer("allowed", tok.allowed(), persistent=False)
        self.tokens = tok

    def read(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        sentence, words, mask = self.text(ids, words=True)
        return self.memory_in(words), ~mask, self.sentence_in(sentence)

    def logits(self, inputs: torch.Tensor, memory: tuple) -> torch.Tensor:
        words, pad, sentence = memory
        L = inputs.shape[1]
        x = self.embed(inputs) + self.position[:L] + sentence.unsqueeze(1)
        causal = torch.triu(torch.full((L, L), float("-inf"), device=x.device), 1)
        h = self.blocks(x, words, tgt_mask=causal, memory_key_padding_mask=pad)
        return self.head(self.norm(h)).float().masked_fill(~self.allowed[:L], float("-inf"))

    def loss(self, ids: torch.Tensor, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        tok = self.tokens
        L = max(len(s) for s in seqs)
        target = torch.full((len(seqs), L), -100, dtype=torch.long)
        inputs = torch.full((len(seqs), L), tok.end, dtype=torch.long)
        inputs[:, 0] = tok.begin
        for i, s in enumerate(seqs):
            target[i, :len(s)] = torch.tensor(s)
            inputs[i, 1:len(s)] = torch.tensor(s[:-1])
        dev = ids.device
        logits = self.logits(inputs.to(dev), self.read(ids))
        return F.cross_entropy(logits.reshape(-1, tok.n), target.to(dev).reshape(-1), ignore_index=-100)

    @torch.no_grad()
    def sample(self, ids: torch.Tensor, temperature: float, gen: torch.Generator) -> list[list[int]]:
        """Token lists, one per sentence; the random draws come from `gen` on the CPU (same seed, same scenes)."""
        tok = self.tokens
        memory = self.read(ids)
        seq = torch.full((len(ids), 1), tok.begin, dtype=torch.long, device=ids.device)
        done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
        for _ in range(tok.length):
            last = self.logits(seq, memory)[:, -1].cpu()
            if temperature <= 0:
                nxt = last.argmax(1)
            else:
                nxt = torch.multinomial((last / temperature).softmax(1), 1, generator=gen)[:, 0]
            nxt = torch.where(done.cpu(), torch.full_like(nxt, tok.end), nxt).to(ids.device)
            done |= nxt == tok.end
            seq = torch.cat([seq, nxt[:, None]], 1)
            if bool(done.all()):
                break
        return [s[1:].tolist() for s in seq.cpu()]


class SceneGenerator(PromptedSampling, nn.Module):
    """Sentence -> 64x64 picture through a scene (see the module docstring). Same public face as `Generator`."""

    def __init__(self, config: SceneGeneratorConfig, vocab: Vocabulary | None = None,
                 settings: DrawSettings | None = None):
        super().__init__()
        if vocab is not None and len(vocab) != config.vocab_size:
            raise I2TError(f"vocabulary has {len(vocab)} words but the config says vocab_size={config.vocab_size}")
        self.config, self.vocab = config, vocab
        self.settings = settings or SCENE_SETTINGS
        if self.settings.guidance != 1.0:
            raise I2TError("a scene generator has no guidance")
        self.picture = ScenePicture(config)
        self.prior = ScenePrior(config)

    def forward(self, ids: torch.Tensor, seqs: Sequence[Sequence[int]]) -> torch.Tensor:
        """The writer's cross-entropy on these (sentence, scene) pairs: the training loss, called through the model
        so that a DistributedDataParallel wrapper sees it and synchronises the gradients."""
        return self.prior.loss(ids, seqs)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str] | str | torch.Tensor, n: int = 1, seed: int = 0,
                 temperature: float | None = None, batch_size: int = 64) -> torch.Tensor:
        """Draw `n` pictures per prompt -> [len(prompts) * n, 3, S, S] in [0, 1], prompt-major, deterministic for a
        seed. `temperature` None = the model's settings; 0 writes each sentence's most likely scene."""
        ids, temperature = self.sampling_ids(prompts, n, temperature)
        device = next(self.parameters()).device
        gen = torch.Generator().manual_seed(check_seed(seed))
        seqs = []
        with evaluating(self):
            for i in range(0, ids.shape[0], batch_size):
                seqs += self.prior.sample(ids[i:i + batch_size].to(device), temperature, gen)
        return self.picture.render(seqs).cpu().clamp_(0, 1)

    def save(self, path: str | Path, *, metrics: dict | None = None, info: dict | None = None, half: bool = False,
             full: bool = True) -> Path:
        """Write a checkpoint folder (every weight is needed to draw, so `full` changes nothing)."""
        if self.vocab is None:
            raise I2TError("cannot save a generator without its vocabulary")
        return save_checkpoint(path, kind="generator", config=config_to_dict(self.config), state_dict=self.state_dict(),
                               vocab=self.vocab, metrics=metrics, info=info, half=half,
                               inference=config_to_dict(self.settings))

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> SceneGenerator:
        config, settings = load_config(ckpt.config, ckpt.inference)
        model = cls(config, vocab=ckpt.vocab, settings=settings)
        state = {k: v.float() for k, v in ckpt.state_dict.items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: weights do not match the scene generator config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()


def bin_index(unit: float, bins: int) -> int:
    """A value in [0, 1] -> its bin among `bins` (values outside are clamped to the end bins)."""
    return int(min(max(unit * bins, 0), bins - 1))


def token_value(seq: Sequence[int], t: int, name: str, tok: SceneTokens) -> int | None:
    """Token t of `seq` as a value of field `name`, or None when it is missing or of another field."""
    if t >= len(seq):
        return None
    value = int(seq[t]) - tok.offset[name]
    return value if 0 <= value < tok.counts[name] else None
