"""Export a model folder's networks to ONNX graphs in its `onnx/` subfolder, once, with torch; the runtime then
needs neither torch nor torchvision nor timm (see `img2text2img.runtime`).

What is exported per kind (the searches stay in numpy):
- captioner: `encoder.onnx` images -> (pooled, grid); `decoder_init.onnx` features -> decoder state;
  `decoder_step.onnx` (prefix, state) -> (log-probabilities, new state). Any decoder (lstm, blstm, attention with
  detected words) and ensembles, since the graphs wrap the decoders' own `init_state` / `step`.
- tagger: BCE head `tagger.onnx` images -> tag probabilities; RNN head `encoder.onnx`, `init.onnx`, `step.onnx`.
- generator (pixel / vae / gan): `generator.onnx` (ids, noise, guidance) -> pictures. The scene kind is refused.
- diffusion generator: `text.onnx` ids -> (sentence, per-word states), `unet.onnx` (latent, t, text states) -> v,
  `decoder.onnx` latent -> pictures; the DDIM loop and the guidance mix run in numpy (`runtime/diffusion.py`).

Weights that are exactly float16 (shipped checkpoints store float16) are kept as float16 with a Cast to float32,
which ONNX Runtime folds when it loads the graph: half the size, the same numbers. Each graph is checked against the
torch module on an example before the folder is written. In the model's own onnx/ folder, weights that
model.safetensors holds byte for byte are left there (`share_weights`), so a shipped folder stores them once.
Imports torch inside its functions only.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from img2text2img.errors import I2TError
from img2text2img.io import atomic_folder, sha256_file
from img2text2img.runtime.graphs import MANIFEST, MANIFEST_FORMAT, SHARED
from img2text2img.runtime.load import RUNTIME_DIR, model_folder
from img2text2img.version import __version__
from img2text2img.words import PAD_ID

OPSET = 17
EXPORTED_GENERATORS = ("pixel", "vae", "gan", "diffusion")  # a generator config's kinds that have an export
CHECK_TOLERANCE = 1e-3  # largest difference allowed between a graph and its torch module on the example


def export_runtime(model_dir: str | Path, out: str | Path | None = None, *, force: bool = False,
                   half: bool = True) -> dict:
    """Write the graphs of the model in `model_dir` to `out` (default: its `onnx/` subfolder) -> the manifest.
    `half=False` keeps every weight float32."""
    import torch

    from img2text2img.checkpoint import check_target
    from img2text2img.models import load_model

    model_dir = model_folder(model_dir)
    out = Path(out) if out is not None else model_dir / RUNTIME_DIR
    check_target(out, force, what="runtime export", is_ours=lambda p: (p / MANIFEST).exists())
    meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8")) \
        if (model_dir / "config.json").exists() else {}
    model = load_model(model_dir).cpu().eval()
    exporters = {"captioner": export_captioner, "tagger": export_tagger, "generator": export_generator}
    if meta.get("kind") not in exporters:
        raise I2TError(f"{model_dir}: no runtime export for a {meta.get('kind')!r} model")
    with atomic_folder(out) as tmp, torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
        manifest = exporters[meta["kind"]](model, tmp)
        sizes, shared = {}, {}
        # graphs in the model's own onnx/ read the weights they share with model.safetensors from it at load
        weights = model_dir / "model.safetensors"
        index = weight_index(weights) if out.resolve() == (model_dir / RUNTIME_DIR).resolve() \
            and weights.exists() else None
        for name in manifest["graphs"].values():
            if half:
                store_half(tmp / name)
            if index is not None:
                shared[name] = share_weights(tmp / name, weights.name, index)
            sizes[name] = (tmp / name).stat().st_size
        manifest.update({"format": MANIFEST_FORMAT, "kind": meta["kind"], "weights_sha256": meta.get("weights_sha256"),
                         "vocab_sha256": meta.get("vocab_sha256"), "library_version": __version__,
                         "opset": OPSET, "half": bool(half), "sizes": sizes,
                         "sha256": {n: sha256_file(tmp / n) for n in sizes},
                         SHARED: {n: m for n, m in shared.items() if m}})
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
    return manifest


def exportable(model_dir: str | Path) -> bool:
    """Whether the model in `model_dir` has a runtime export (read from its config.json, no model is loaded)."""
    try:
        meta = json.loads((model_folder(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(meta, dict):
        return False
    config = meta.get("config") if isinstance(meta.get("config"), dict) else {}
    return meta.get("kind") in ("captioner", "tagger") or (
        meta.get("kind") == "generator" and config.get("kind", "pixel") in EXPORTED_GENERATORS)


# -- the graphs ---------------------------------------------------------------------------------------------------


def export_graph(module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict) -> None:
    """torch -> ONNX (the TorchScript exporter, as `models/encoders/onnx.py`), then a check on `args`."""
    import torch

    module.eval()
    torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, opset_version=OPSET,
                      dynamo=False, dynamic_axes=dynamic, training=torch.onnx.TrainingMode.PRESERVE)
    check_graph(module, args, path, inputs, outputs)


def check_graph(module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    import onnxruntime as ort

    want = module(*args)
    want = want if isinstance(want, (tuple, list)) else (want,)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    declared = {i.name for i in session.get_inputs()}
    got = session.run(outputs, {n: a.numpy() for n, a in zip(inputs, args) if n in declared})
    for name, w, g in zip(outputs, want, got):
        w = w.float().numpy() if w.is_floating_point() else w.numpy()
        if w.shape != g.shape or not np.allclose(g, w, atol=CHECK_TOLERANCE, rtol=CHECK_TOLERANCE, equal_nan=True):
            worst = float(np.nanmax(np.abs(g - w))) if w.shape == g.shape else f"shape {g.shape} vs {w.shape}"
            raise I2TError(f"{path.name}: output {name} differs from the torch model ({worst}); not exported")


def export_captioner(model, tmp: Path) -> dict:
    import torch
    from torch import nn

    enc = model.ensure_encoder().eval()
    pre = enc.preprocess
    S = pre.image_size
    images = torch.rand(2, 3, S, S) * 2 - 1
    export_graph(enc, (images,), tmp / "encoder.onnx", ["images"], ["pooled", "grid"],
                 {"images": {0: "batch"}, "pooled": {0: "batch"}, "grid": {0: "batch"}})
    pooled, grid = enc(images)
    dec, uses_grid = model.decoder, model.config.uses_grid
    state = dec.init_state(pooled, grid if uses_grid else None)
    keys = list(state)
    per_image = sorted(getattr(dec, "per_image_state", frozenset()) & set(keys))
    carried = [k for k in keys if k not in per_image]

    class Init(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = dec

        def forward(self, pooled, grid=None):
            s = self.decoder.init_state(pooled, grid)
            return tuple(s[k] for k in keys)

    init_args = (pooled, grid) if uses_grid else (pooled,)
    init_inputs = ["pooled", "grid"] if uses_grid else ["pooled"]
    export_graph(Init(), init_args, tmp / "decoder_init.onnx", init_inputs, [f"state.{k}" for k in keys],
                 {**{n: {0: "batch"} for n in init_inputs}, **{f"state.{k}": {0: "batch"} for k in keys}})

    class Step(nn.Module):
        def __init__(self):
            super().__init__()
            self.decoder = dec

        def forward(self, prefix, *values):
            logits, new = self.decoder.step(dict(zip(keys, values)), prefix)
            return (torch.log_softmax(logits.float(), -1), *(new[k] for k in carried))

    rows = 5  # a beam's few rows: the decoders then trace their weight-side products (fast_linear), plain matmuls
    idx = torch.arange(pooled.shape[0]).repeat_interleave(rows)[:rows]
    values = tuple(state[k].index_select(0, idx) for k in keys)
    prefix = torch.randint(4, model.config.vocab_size, (rows, 3))
    prefix[:, 0] = 1  # <start>
    names = [f"state.{k}" for k in keys]
    export_graph(Step(), (prefix, *values), tmp / "decoder_step.onnx", ["prefix", *names],
                 ["logp", *(f"new.{k}" for k in carried)],
                 {"prefix": {0: "rows", 1: "t"}, "logp": {0: "rows"}, **{n: {0: "rows"} for n in names},
                  **{f"new.{k}": {0: "rows"} for k in carried}})
    s = model.settings
    return {"graphs": {"encoder": "encoder.onnx", "init": "decoder_init.onnx", "step": "decoder_step.onnx"},
            "preprocess": pre.to_dict(), "state_keys": keys, "per_image": per_image, "carried": carried,
            "uses_grid": bool(uses_grid), "max_len": int(model.config.max_len),
            "settings": {"beam_size": int(s.beam_size), "length_alpha": float(s.length_alpha)}}


def export_tagger(model, tmp: Path) -> dict:
    import torch
    from torch import nn

    cfg, pre = model.config, model.encoder.preprocess
    images = torch.rand(2, 3, pre.image_size, pre.image_size) * 2 - 1
    # the encoder's pooled features are a second output: open vocabulary's detector reads them (openvocab/tags.py)
    common = {"preprocess": pre.to_dict(), "head": cfg.head, "max_tags": int(cfg.max_tags),
              "encoder": model.encoder.name, "encoder_trained": bool(model.encoder_trained),
              "settings": {"beam": int(model.settings.beam), "threshold": float(model.settings.threshold),
                           "open_vocab": bool(model.settings.open_vocab)}}
    if cfg.head == "bce":
        keep = (torch.arange(cfg.vocab_size) >= 4).float()  # the specials never fire

        class Probabilities(nn.Module):
            def __init__(self):
                super().__init__()
                self.tagger = model
                self.register_buffer("keep", keep)

            def forward(self, images):
                pooled, grid = self.tagger.encoder(images)
                vector = self.tagger.pool(pooled, grid)
                return torch.sigmoid(self.tagger.head(vector).float()) * self.keep, pooled.float()

        export_graph(Probabilities(), (images,), tmp / "tagger.onnx", ["images"], ["probabilities", "pooled"],
                     {"images": {0: "batch"}, "probabilities": {0: "batch"}, "pooled": {0: "batch"}})
        return {"graphs": {"tagger": "tagger.onnx"}, **common}

    class Features(nn.Module):
        def __init__(self):
            super().__init__()
            self.tagger = model

        def forward(self, images):
            pooled, grid = self.tagger.encoder(images)
            return self.tagger.pool(pooled, grid), pooled.float()

    head = model.head

    class Init(nn.Module):
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, features):
            h, c, img = self.head.init_state(features)
            return h[0], c[0], img[:, 0]

    class Step(nn.Module):  # RNNTagHead.step_logits without the order mask, which the numpy search applies
        def __init__(self):
            super().__init__()
            self.head = head

        def forward(self, tokens, h, c, img):
            out, (h2, c2) = self.head.lstm(self.head.embed(tokens[:, None]), (h[None], c[None]))
            return self.head.out(self.head.drop(torch.relu(out + img[:, None])))[:, 0], h2[0], c2[0]

    export_graph(Features(), (images,), tmp / "encoder.onnx", ["images"], ["features", "pooled"],
                 {"images": {0: "batch"}, "features": {0: "batch"}, "pooled": {0: "batch"}})
    features = model.image_vector(images)
    export_graph(Init(), (features,), tmp / "init.onnx", ["features"], ["h", "c", "img"],
                 {n: {0: "batch"} for n in ("features", "h", "c", "img")})
    h, c, img = Init()(features)
    tokens = torch.tensor([1, 5])
    export_graph(Step(), (tokens, h, c, img), tmp / "step.onnx", ["tokens", "h", "c", "img"],
                 ["logits", "new.h", "new.c"],
                 {"tokens": {0: "rows"}, "h": {0: "rows"}, "c": {0: "rows"}, "img": {0: "rows"},
                  "logits": {0: "rows"}, "new.h": {0: "rows"}, "new.c": {0: "rows"}})
    return {"graphs": {"encoder": "encoder.onnx", "init": "init.onnx", "step": "step.onnx"}, **common}


def export_generator(model, tmp: Path) -> dict:
    import torch
    from torch import nn

    cfg = model.config
    if cfg.kind not in EXPORTED_GENERATORS:
        raise I2TError(f"the {cfg.kind} generator stays on torch (a scene's layout sampler and renderer are Python); "
                       "only pixel, vae, gan and diffusion generators are exported")
    if cfg.kind == "diffusion":
        return export_diffusion(model, tmp)

    class Draw(nn.Module):
        """`Generator.draw` with guidance as an input; guidance 1 takes the sentence vector as it is, as draw does."""

        def __init__(self):
            super().__init__()
            self.gen = model

        def forward(self, ids, z, guidance):
            s = self.gen.text(ids)
            mean = self.gen.sentence_mean
            s = torch.where(guidance == 1.0, s, mean + guidance * (s - mean))
            if cfg.z_dim:
                s = torch.cat([s, self.gen.from_noise(s, z)], dim=1)
            return self.gen.decoder(s)

    ids = torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]])
    z = torch.randn(2, max(cfg.z_dim, 1))[:, :cfg.z_dim]
    inputs = ["ids", "z", "guidance"]
    for g in (1.0, 2.5):  # both branches of the guidance switch are checked
        export_graph(Draw(), (ids, z, torch.tensor(g)), tmp / "generator.onnx", inputs, ["images"],
                     {"ids": {0: "batch", 1: "tokens"}, "z": {0: "batch"}, "images": {0: "batch"}})
    return {"graphs": {"generator": "generator.onnx"}, "z_dim": int(cfg.z_dim), "max_tokens": int(cfg.max_tokens),
            "image_size": int(cfg.image_size), "has_sentence_mean": bool(model.sentence_mean.any()),
            "settings": {"temperature": float(model.settings.temperature),
                         "guidance": float(model.settings.guidance)}}


def export_diffusion(model, tmp: Path) -> dict:
    """The three networks `DiffusionGenerator.generate` calls, EMA weights: the numpy loop calls the UNet once per
    step (prompted and empty-prompt rows in one batch under guidance), as the torch sampler does."""
    import torch
    from torch import nn

    from img2text2img.models.diffusion import empty_prompt_ids

    cfg, ema, ae = model.config, model.ema, model.autoencoder

    class Text(nn.Module):
        def __init__(self):
            super().__init__()
            self.text = ema.text

        def forward(self, ids):
            sentence, words, _ = self.text(ids, words=True)
            return sentence, words

    class Decode(nn.Module):  # Autoencoder.decode: the latent shift / scale, pixels in [0, 1]
        def __init__(self):
            super().__init__()
            self.ae = ae

        def forward(self, z):
            return self.ae.decode(z)

    ids = torch.cat([torch.tensor([[1, 5, 6, 7, 2], [1, 8, 2, 0, 0]]), empty_prompt_ids(2, 5)])
    export_graph(Text(), (ids,), tmp / "text.onnx", ["ids"], ["sentence", "words"],
                 {"ids": {0: "batch", 1: "tokens"}, "sentence": {0: "batch"}, "words": {0: "batch", 1: "tokens"}})
    sentence, words = Text()(ids)
    c, side = cfg.latent_channels, cfg.latent_side
    z = torch.randn(4, c, side, side)
    t = torch.tensor([1.0, 0.75, 0.5, 0.04])
    export_graph(ema.unet, (z, t, sentence, words, ids != PAD_ID), tmp / "unet.onnx",
                 ["z", "t", "sentence", "words", "mask"], ["v"],
                 {"z": {0: "batch"}, "t": {0: "batch"}, "sentence": {0: "batch"}, "words": {0: "batch", 1: "tokens"},
                  "mask": {0: "batch", 1: "tokens"}, "v": {0: "batch"}})
    export_graph(Decode(), (z[:2],), tmp / "decoder.onnx", ["z"], ["images"], {"z": {0: "batch"}, "images": {0: "batch"}})
    s = model.settings
    return {"graphs": {"text": "text.onnx", "unet": "unet.onnx", "decoder": "decoder.onnx"}, "generator": "diffusion",
            "max_tokens": int(cfg.max_tokens), "image_size": int(cfg.image_size), "latent_channels": int(c),
            "latent_side": int(side), "settings": {"steps": int(s.steps), "guidance": float(s.guidance)}}


# -- storage ------------------------------------------------------------------------------------------------------


def tensor_key(a: np.ndarray) -> tuple:
    """A weight's identity for sharing: dtype, shape and the sha256 of its bytes."""
    import hashlib

    return a.dtype.str, a.shape, hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def weight_index(weights: Path) -> dict[tuple, str]:
    """{tensor_key: safetensors key} of a model.safetensors file, read once per export."""
    from safetensors.numpy import load_file

    index: dict[tuple, str] = {}
    for k, v in load_file(str(weights)).items():
        index.setdefault(tensor_key(v), k)
    return index


def share_weights(path: Path, weights_name: str, index: dict[tuple, str], min_size: int = 1024) -> dict[str, str]:
    """Drop from the graph each weight of `min_size`+ values that the folder's model.safetensors (`index`,
    `weight_index`) holds byte for byte, leaving an external-data stub of its name, type and shape: the runtime
    hands ONNX Runtime the tensor read from the safetensors file instead (`Graph`), so a shipped folder stores such
    a weight once, not twice. Returns {initializer: safetensors key}."""
    import onnx
    from onnx import TensorProto, numpy_helper

    m = onnx.load(str(path))
    mapping: dict[str, str] = {}
    for init in m.graph.initializer:
        if np.prod(init.dims) < min_size or init.data_location == TensorProto.EXTERNAL:
            continue
        a = numpy_helper.to_array(init)
        found = index.get(tensor_key(a))
        if found is None:
            continue
        init.ClearField("raw_data")
        for field in ("float_data", "int32_data", "int64_data", "double_data"):
            init.ClearField(field)
        init.data_location = TensorProto.EXTERNAL
        del init.external_data[:]
        for k, v in (("location", weights_name), ("offset", "0"), ("length", str(a.nbytes))):
            entry = init.external_data.add()
            entry.key, entry.value = k, v
        mapping[init.name] = found
    if mapping:
        onnx.save(m, str(path))
    return mapping


def store_half(path: Path, min_size: int = 1024) -> None:
    """Rewrite the graph with each float32 weight of `min_size`+ values that float16 holds exactly as float16 plus a
    Cast node: lossless, since shipped checkpoints store float16 and the exporter only transposes most weights."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    m = onnx.load(str(path))
    g = m.graph
    casts, kept = [], []
    for init in g.initializer:
        if init.data_type != TensorProto.FLOAT or np.prod(init.dims) < min_size:
            kept.append(init)
            continue
        a = numpy_helper.to_array(init)
        h = a.astype(np.float16)
        if not np.array_equal(h.astype(np.float32), a):
            kept.append(init)
            continue
        kept.append(numpy_helper.from_array(h, f"{init.name}.f16"))
        casts.append(helper.make_node("Cast", [f"{init.name}.f16"], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}.cast"))
    if not casts:
        return
    del g.initializer[:]
    g.initializer.extend(kept)
    nodes = list(g.node)
    del g.node[:]
    g.node.extend(casts + nodes)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
