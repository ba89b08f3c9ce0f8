"""The models a server holds: loaded once at start-up, shared by every request, used one call at a time.

Why serialised rather than a pool of copies: inference here is CPU-bound and torch already spreads one call over
the cores, so two calls at once would only share the same cores; and the models keep state between calls (the
captioner's fast encoder copy, a generator's draw settings) that must not be raced. Caption requests that arrive
while the models are busy are run together as one batch (`CaptionBatcher`): one encoder pass and one beam search
for all of them cost far less than one each. Each answer reports the time of the model call it was part of (`ms`),
the time it waited (`queue_ms`) and how many photos shared that call (`batch`).
"""
from __future__ import annotations

import base64
import io
import queue
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.metrics.caption import corpus_bleu_scores
from img2text2img.models import inference_device, load_model
from img2text2img.models.generator import PromptWarning, make_grid, to_pil
from img2text2img.models.names import SHIPPED_MODELS, default_model, resolve_model
from img2text2img.serve.attention import captions_with_attention, has_attention
from img2text2img.vocab import tokenize

KINDS = ("captioner", "tagger", "generator")
TOP_TAGS = 10
MAX_BATCH = 8  # caption requests run together at most; past this the encoder gains little and the first waits longer


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
                 device: str = "cpu", max_batch: int = MAX_BATCH) -> None:
        self.captioner, self.tagger, self.generator = captioner, tagger, generator
        self.names = dict(names or {})
        self.device = device
        self.lock = threading.Lock()
        self.batcher = CaptionBatcher(self, max_batch)

    @classmethod
    def load(cls, captioner: str | None = None, tagger: str | None = None, generator: str | None = None,
             data: str | None = None, device: str = "auto", max_batch: int = MAX_BATCH) -> ServedModels:
        """Each model from a name or folder, or (None) the shipped one for `data` (None: `default_data()`);
        `max_batch` caption requests at most run together (1: one at a time)."""
        data = data or default_data()
        dev = inference_device(device)
        loaded, names = {}, {}
        for kind, choice in zip(KINDS, (captioner, tagger, generator)):
            path = resolve_model(choice, kind, data)
            loaded[kind] = load_model(path, kind=kind, device=dev)
            names[kind] = model_label(path)
        return cls(**loaded, names=names, device=dev, max_batch=max_batch)

    # -- bookkeeping ----------------------------------------------------------------------------------------------

    def need(self, kind: str):
        model = getattr(self, kind)
        if model is None:
            raise ModelMissing(f"this server has no {kind} loaded (start it with --{kind} NAME or DIR)")
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

    def caption(self, image: Image.Image, attention: bool = True) -> dict:
        """{caption, tokens, logprob, tags, attention, ms, queue_ms, batch} for one RGB image, run in a batch with
        the requests that are waiting with it; tags are [] without a tagger, attention None without an attention
        decoder (or when not asked)."""
        self.need("captioner")
        return self.batcher.submit(image, attention).result()

    def caption_many(self, images: list[Image.Image], attention: list[bool]) -> tuple[list[dict], dict]:
        """Caption and tag `images` in one model call (under the lock) -> (one answer per image, the times)."""
        cap = self.need("captioner")
        with self.turn() as times:
            pairs = captions_with_attention(cap, images, attention=attention)
            tags = self.tagger.tag_images(images, top=TOP_TAGS) if self.tagger is not None else [[] for _ in images]
        out = [{"caption": r.text, "tokens": r.tokens, "logprob": round(r.logprob, 4),
                "tags": [[t, round(float(s), 4)] for t, s in tg],
                "attention": maps.to_json() if maps is not None else None}
               for (r, maps), tg in zip(pairs, tags)]
        return out, times

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


@dataclass
class CaptionJob:
    image: Image.Image
    attention: bool
    future: Future = field(default_factory=Future)
    queued: float = field(default_factory=time.perf_counter)


class CaptionBatcher:
    """One thread that runs caption requests: each time the models are free it takes every request waiting (up to
    MAX_BATCH) and runs them as one batch, so a lone request is never held back waiting for company. A batch that
    fails is retried one photo at a time, so one bad photo fails only its own request."""

    def __init__(self, models: ServedModels, max_batch: int = MAX_BATCH) -> None:
        if max_batch < 1:
            raise I2TError(f"the caption batch must hold at least 1 photo, got {max_batch}")
        self.models, self.max_batch = models, max_batch
        self.jobs: queue.SimpleQueue[CaptionJob] = queue.SimpleQueue()
        self.thread: threading.Thread | None = None
        self.start_lock = threading.Lock()

    def submit(self, image: Image.Image, attention: bool = True) -> Future:
        job = CaptionJob(image, attention)
        with self.start_lock:  # started on first use: a server that never captions has no idle thread
            if self.thread is None:
                self.thread = threading.Thread(target=self.loop, name="i2t-caption-batcher", daemon=True)
                self.thread.start()
        self.jobs.put(job)
        return job.future

    def loop(self) -> None:
        while True:
            batch = [self.jobs.get()]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            self.run(batch)

    def run(self, batch: list[CaptionJob]) -> None:
        start = time.perf_counter()
        try:
            answers, times = self.models.caption_many([j.image for j in batch], [j.attention for j in batch])
        except Exception as e:  # noqa: BLE001 - handed to the requests, never the end of the thread
            if len(batch) > 1:
                for job in batch:
                    self.run([job])
            else:
                batch[0].future.set_exception(e)
            return
        for job, answer in zip(batch, answers):
            wait = (start - job.queued) * 1000.0 + times["queue_ms"]
            job.future.set_result({**answer, "ms": times["ms"], "queue_ms": round(wait, 1), "batch": len(batch)})
