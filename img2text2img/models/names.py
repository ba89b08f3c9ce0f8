"""The one table of the models shipped inside the package: name -> folder under `img2text2img/pretrained/`, task,
data set, and which is the default for each (task, data set).

Why a table: users and scripts say `flickr8k-captioner`, not a path into site-packages, and every command and
Python call that takes a model resolves names here, so a folder is renamed in one place. The old folder names
(`captioner`, `generator_flickr8k`, ...) are accepted as names too. The quality line is read from each folder's
`metrics.json`, so it is always the one the model was shipped with. Nothing here imports torch: `i2t models` and
`--help` stay fast.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from img2text2img.errors import I2TError

PRETRAINED = Path(__file__).resolve().parents[1] / "pretrained"
DATA_SETS = ("shapes", "flickr8k")  # what `--data` may name to pick a shipped model
DEFAULT_DATA = "flickr8k"  # real photos and sentences, unless the user asks for shapes
TASKS = {"captioner": "caption", "tagger": "tag", "generator": "generate"}  # model kind -> the command that uses it


@dataclass(frozen=True)
class ShippedModel:
    name: str
    folder: str  # under img2text2img/pretrained/
    kind: str  # captioner | tagger | generator (the checkpoint's kind)
    data: str  # the data set it was trained on: flickr8k | shapes
    about: str  # what the network is, in a few words
    default: bool = False  # the model `caption` / `tag` / `generate` use for this data set when none is named

    @property
    def task(self) -> str:
        return TASKS[self.kind]

    @property
    def path(self) -> Path:
        return PRETRAINED / self.folder

    @property
    def present(self) -> bool:
        return (self.path / "config.json").exists()

    def size_bytes(self) -> int:
        """On disk, with the runtime graphs (onnx/) when the folder has them."""
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file()) if self.path.is_dir() else 0

    def quality(self) -> str:
        """One line of test scores from the shipped metrics.json ('' when it has none)."""
        try:
            metrics = json.loads((self.path / "metrics.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return ""
        return quality_line(self.kind, metrics if isinstance(metrics, dict) else {})


SHIPPED_MODELS: dict[str, ShippedModel] = {m.name: m for m in (
    ShippedModel("flickr8k-captioner", "captioner", "captioner", "flickr8k",
                 "EfficientNet-Lite0 (fine-tuned) + soft attention", default=True),
    ShippedModel("shapes-captioner", "captioner_shapes", "captioner", "shapes", "small CNN + soft attention",
                 default=True),
    ShippedModel("flickr8k-tagger", "tagger", "tagger", "flickr8k", "EfficientNet-Lite0 + linear BCE head",
                 default=True),
    ShippedModel("shapes-tagger", "tagger_shapes", "tagger", "shapes", "small CNN + CNN-RNN tag sequence",
                 default=True),
    ShippedModel("flickr8k-diffusion", "diffusion_flickr8k", "generator", "flickr8k",
                 "latent diffusion: a UNet over a 16x16x4 autoencoder latent, 25 DDIM steps, 64x64", default=True),
    ShippedModel("flickr8k-vae", "generator_flickr8k", "generator", "flickr8k",
                 "conditional VAE with a learned prior, 64x64"),
    ShippedModel("flickr8k-gan", "flickr8k-gan", "generator", "flickr8k",
                 "latent GAN: DF-GAN-style generator of the diffusion autoencoder's latents, 64x64"),
    ShippedModel("shapes-scene", "generator", "generator", "shapes",
                 "scene writer: a transformer writes objects, drawn as sprites", default=True),
)}
# the folder names the models were known by before they had names
ALIASES = {m.folder: m.name for m in SHIPPED_MODELS.values()}


def quality_line(kind: str, metrics: dict) -> str:
    """The headline test scores of a shipped model's metrics.json, in one line."""
    test = metrics.get("test") if isinstance(metrics.get("test"), dict) else {}
    parts: list[str] = []

    def add(label: str, value, fmt: str = ".3f") -> None:
        if isinstance(value, (int, float)):
            parts.append(f"{label} {value:{fmt}}")

    if kind == "captioner":
        add("BLEU-4", test.get("coco_bleu4", test.get("bleu4")))
        add("CIDEr-D", test.get("coco_cider_d"))
        add("METEOR", test.get("coco_meteor"))
    elif kind == "tagger":
        add("micro F1", test.get("micro_f1"), ".2f")
        add("macro F1", test.get("macro_f1"), ".2f")
    elif kind == "generator":
        rt = metrics.get("roundtrip") if isinstance(metrics.get("roundtrip"), dict) else {}
        fr = metrics.get("frechet") if isinstance(metrics.get("frechet"), dict) else {}
        add("round trip (normalised BLEU-4)", rt.get("normalised_bleu4"))
        add("Fréchet", fr.get("frechet_feature_distance"), ".0f")
    return ", ".join(parts)


def shipped_model(name: str) -> ShippedModel | None:
    """The shipped model called `name` (or by its old folder name), else None."""
    key = str(name).strip()
    return SHIPPED_MODELS.get(key) or SHIPPED_MODELS.get(ALIASES.get(key, ""))


def names_of(kind: str | None = None) -> list[str]:
    return [m.name for m in SHIPPED_MODELS.values() if kind is None or m.kind == kind]


def data_key(data: str | None) -> str:
    """`--data` as a key of the table: None is the default (Flickr8k); `shapes:N` and shapes folders are shapes."""
    if data is None:
        return DEFAULT_DATA
    d = str(data).strip().lower()
    if d.startswith("shape"):
        return "shapes"
    if d.startswith("flickr8k"):
        return "flickr8k"
    raise I2TError(f"--data must be one of: {', '.join(DATA_SETS)} (or pass --model NAME|DIR)")


def shipped_data(data: str | None) -> str | None:
    """The table's key for a dataset argument of an eval command (`shapes:500` -> shapes), None for a folder of
    the user's own (whose model must then be named, or is the Flickr8k one)."""
    try:
        return data_key(data)
    except I2TError:
        return None


def default_model(kind: str, data: str | None = None) -> ShippedModel:
    """The shipped `kind` used for data set `data` (None: Flickr8k) when no model is named."""
    key = data_key(data)
    for m in SHIPPED_MODELS.values():
        if m.kind == kind and m.data == key and m.default:
            return m
    raise I2TError(f"no {kind} for {data} ships with this version; pass --model DIR (a trained {kind} folder)")


def default_model_dir(kind: str, data: str | None = None) -> Path:
    """The folder of `default_model(kind, data)`, or a one-line error when this install lacks it."""
    m = default_model(kind, data)
    if not m.present:
        raise I2TError(f"the shipped {m.name} is missing from this install ({m.path}); pass --model DIR")
    return m.path


def resolve_model(model: str | Path | None, kind: str | None = None, data: str | None = None) -> Path:
    """What a `--model` / `model=` value means, as a folder: None -> the default for (`kind`, `data`); an existing
    path -> itself (a folder the user has wins over a name); a shipped name or old folder name -> its folder; anything
    else is a one-line error listing the names. `kind` refuses a shipped model of another kind by name."""
    if model is None:
        if kind is None:
            raise I2TError("name a model: a shipped name (`i2t models` lists them) or a model folder")
        return default_model_dir(kind, data)
    path = Path(model).expanduser()
    if path.exists() or path.is_symlink() or path.with_name(path.name + ".old").exists():
        return path
    m = shipped_model(str(model))
    if m is None:
        if isinstance(model, Path) or looks_like_path(model):  # meant as a folder: the loader says it is missing
            return path
        what = f"shipped {kind} names" if kind else "shipped model names"
        raise I2TError(f"model {str(model)!r} not found: no such folder, and not one of the {what}: "
                       f"{', '.join(names_of(kind))} (`i2t models` lists them)")
    if kind is not None and m.kind != kind:
        raise I2TError(f"{m.name} is a {m.kind}, not a {kind}; {kind}s: {', '.join(names_of(kind))}")
    if not m.present:
        raise I2TError(f"the shipped {m.name} is missing from this install ({m.path}); pass --model DIR")
    return m.path


def looks_like_path(model: str | Path) -> bool:
    """Whether a model value that names nothing was meant as a folder (it has a folder separator or starts like a
    path), so the error says which folder is missing rather than listing names."""
    s = str(model)
    return "/" in s or "\\" in s or s.startswith((".", "~"))


def model_rows() -> list[dict]:
    """The table as `i2t models` shows it: name, task, data, quality, size, folder, default."""
    return [{"name": m.name, "task": m.task, "kind": m.kind, "data": m.data, "about": m.about,
             "quality": m.quality(), "size_bytes": m.size_bytes(), "folder": m.folder, "default": m.default,
             "present": m.present} for m in SHIPPED_MODELS.values()]
