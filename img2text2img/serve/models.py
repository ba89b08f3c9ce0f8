"""The models a server holds: loaded once at start-up, shared by every request, used under one lock.

Why a lock rather than a pool of copies: inference here is CPU-bound and torch already spreads one call over the
cores, so two requests at once would only share the same cores; and the models keep state between calls (the
captioner's fast encoder copy, a generator's draw settings) that must not be raced. Each call reports the time it
spent in the model (`ms`) apart from the time it waited for the lock (`queue_ms`).
"""
from __future__ import annotations

import base64
import io
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.metrics.caption import corpus_bleu_scores
from img2text2img.models import inference_device, load_model
from img2text2img.models.generator import PromptWarning, make_grid, to_pil
from img2text2img.models.names import SHIPPED_MODELS, default_model, resolve_model
from img2text2img.serve.attention import caption_with_attention, has_attention
from img2text2img.vocab import tokenize

KINDS = ("captioner", "tagger", "generator")
TOP_TAGS = 10


def default_data() -> str:
    """flickr8k when all three of its shipped models are in this install, else shapes (which needs no downloads)."""
    return "flickr8k" if all(default_model(k, "flickr8k").present for k in KINDS) else "shapes"


def model_label(path: Path) -> str:
    """A loaded model's shipped name when it is one, else its folder."""
    for m in SHIPPED_MODELS.values():
        if m.path.resolve() == Path(path).resolve():
            return m.name
    return str(path)


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + base64.b64encode(png_bytes(image)).decode("ascii")


@dataclass
class Drawn:
    """Pictures drawn for one prompt, with the prompt's warnings (unknown words, truncation) and the times."""
    images: list[Image.Image]
    warnings: list[str]
    ms: float
    queue_ms: float


class ServedModels:
    """A captioner, a tagger and a generator (any may be None: its endpoints then answer 503), used one call at a
    time. `names` says what each is (a shipped name or a folder), for /api/health and the page."""

    def __init__(self, captioner=None, tagger=None, generator=None, names: dict[str, str] | None = None,
                 device: str = "cpu") -> None:
        self.captioner, self.tagger, self.generator = captioner, tagger, generator
        self.names = dict(names or {})
        self.device = device
        self.lock = threading.Lock()

    @classmethod
    def load(cls, captioner: str | None = None, tagger: str | None = None, generator: str | None = None,
             data: str | None = None, device: str = "auto") -> ServedModels:
        """Each model from a name or folder, or (None) the shipped one for `data` (None: `default_data()`)."""
        data = data or default_data()
        dev = inference_device(device)
        loaded, names = {}, {}
        for kind, choice in zip(KINDS, (captioner, tagger, generator)):
            path = resolve_model(choice, kind, data)
            loaded[kind] = load_model(path, kind=kind, device=dev)
            names[kind] = model_label(path)
        return cls(**loaded, names=names, device=dev)

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def need(self, kind: str):
        model = getattr(self, kind)
        if model is None:
            raise ModelMissing(f"this server has no {kind} loaded (start it with --{kind} NAME|DIR)")
        return model

    @contextmanager
    def turn(self) -> Iterator[dict]:
        """The lock, with the wait and the model time recorded in the yielded dict (ms, queue_ms)."""
        t0 = time.perf_counter()
        with self.lock:
            t1 = time.perf_counter()
            times = {"queue_ms": round((t1 - t0) * 1000.0, 1)}
            with torch.inference_mode():
                yield times
            times["ms"] = round((time.perf_counter() - t1) * 1000.0, 1)

    def generator_guidance(self) -> tuple[bool, float | None]:
        """(whether the generator takes a guidance, its own default)."""
        gen = self.generator
        if gen is None or not hasattr(gen, "check_guidance"):
            return False, None
        return True, float(gen.settings.guidance)

    def describe(self) -> dict:
        """The loaded models, for /api/health."""
        out = {}
        for kind in KINDS:
            model = getattr(self, kind)
            if model is None:
                out[kind] = None
                continue
            shipped = SHIPPED_MODELS.get(self.names.get(kind, ""))
            info = {"name": self.names.get(kind, "?"), "data": shipped.data if shipped else None,
                    "about": shipped.about if shipped else None}
            if kind == "captioner":
                info["attention"] = has_attention(model)
                info["beam"] = int(model.settings.beam_size)
            if kind == "generator":
                info["guidance"], info["default_guidance"] = self.generator_guidance()
                info["kind"] = getattr(model.config, "kind", None)
            out[kind] = info
        return out

    # -- inference ------------------------------------------------------------------------------------------------

    def caption(self, image: Image.Image, attention: bool = True, top: int = TOP_TAGS) -> dict:
        """{caption, tokens, logprob, tags, attention, ms, queue_ms} for one RGB image; tags are [] without a
        tagger, attention is None without an attention decoder (or when not asked)."""
        cap = self.need("captioner")
        with self.turn() as times:
            result, maps = caption_with_attention(cap, image)
            tags = self.tagger.tag_images([image], top=top) if self.tagger is not None else [[]]
        return {"caption": result.text, "tokens": result.tokens, "logprob": round(result.logprob, 4),
                "tags": [[t, round(float(s), 4)] for t, s in tags[0]],
                "attention": maps.to_json() if (attention and maps is not None) else None, **times}

    def tag(self, image: Image.Image, top: int = TOP_TAGS) -> dict:
        tagger = self.need("tagger")
        with self.turn() as times:
            tags = tagger.tag_images([image], top=top)[0]
        return {"tags": [[t, round(float(s), 4)] for t, s in tags], **times}

    def draw(self, prompt: str, n: int, seed: int, guidance: float | None) -> Drawn:
        gen = self.need("generator")
        takes, _ = self.generator_guidance()
        if guidance is not None and not takes:
            raise I2TError(f"{self.names.get('generator', 'this generator')} draws scenes and has no guidance; "
                           "leave guidance out")
        with self.turn() as times, warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", PromptWarning)
            if guidance is not None:
                gen.check_guidance(guidance)
                pics = gen.generate([prompt], n=n, seed=seed, guidance=guidance)
            else:
                pics = gen.generate([prompt], n=n, seed=seed)
        notes = list(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, PromptWarning)))
        return Drawn(to_pil(pics), notes, times["ms"], times["queue_ms"])

    def generate_png(self, prompt: str, n: int = 4, seed: int = 0, guidance: float | None = None
                     ) -> tuple[bytes, Drawn]:
        """The pictures as one PNG grid (near-square), and what drew them."""
        drawn = self.draw(prompt, n, seed, guidance)
        return png_bytes(make_grid(drawn.images)), drawn

    def roundtrip(self, prompt: str, seed: int = 0) -> dict:
        """Sentence -> one drawing -> its caption, with BLEU-1..4 of the caption against the sentence (the
        library's corpus BLEU on one pair, unsmoothed: an order with no matching n-gram scores 0)."""
        self.need("captioner")
        drawn = self.draw(prompt, 1, seed, None)
        back = self.caption(drawn.images[0], attention=True)
        hyp, ref = tokenize(back["caption"]), tokenize(prompt)
        bleu = corpus_bleu_scores([[ref]], [hyp]) if hyp else {f"bleu{k}": 0.0 for k in range(1, 5)}
        return {"prompt": prompt, "seed": seed, "drawing": data_url(drawn.images[0]), "caption": back["caption"],
                "logprob": back["logprob"], "tags": back["tags"], "attention": back["attention"],
                "bleu": {k: round(v, 4) for k, v in bleu.items()}, "warnings": drawn.warnings,
                "ms": round(drawn.ms + back["ms"], 1), "queue_ms": round(drawn.queue_ms + back["queue_ms"], 1)}

    def warm_up(self) -> None:
        """One call of each model on a blank picture and a short sentence, so that the first request does not pay
        the lazy set-up (the captioner's encoder, first-call allocations)."""
        blank = Image.new("RGB", (224, 224), (128, 128, 128))
        if self.captioner is not None:
            self.caption(blank)
        elif self.tagger is not None:
            self.tag(blank)
        if self.generator is not None:
            self.draw("a dog", 1, 0, None)


class ModelMissing(I2TError):
    """An endpoint whose model this server did not load (HTTP 503)."""
