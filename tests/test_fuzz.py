"""Seeded, bounded fuzzing of the two places user files enter: the image loader and model-folder loading. Whatever
the bytes, the answer is an RGB image (or a model) or one `I2TError` line, quickly, never another exception."""
from __future__ import annotations

import io
import json
import shutil
import struct
import time
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from img2text2img.data.images import load_image
from img2text2img.errors import I2TError
from img2text2img.io import sha256_file
from img2text2img.models import load_model
from img2text2img.vocab import Vocabulary

FUZZ = settings(derandomize=True, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
PER_FILE_S = 5.0  # "no single image costs more than a few seconds"


def _seeds() -> list[bytes]:
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 32, 3), dtype=np.uint8))
    out = []
    for fmt, img in (("PNG", rgb), ("JPEG", rgb), ("GIF", rgb), ("BMP", rgb), ("TIFF", rgb), ("WEBP", rgb),
                     ("PNG", rgb.convert("RGBA")), ("PNG", rgb.convert("I;16")), ("TIFF", rgb.convert("F")),
                     ("PNG", rgb.convert("P"))):
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seeds()


def _answer(path) -> None:
    t0 = time.perf_counter()
    try:
        img = load_image(path)
        assert img.mode == "RGB" and img.width * img.height <= 89_478_485
    except I2TError as e:
        assert "\n" not in str(e) and str(e)
    assert time.perf_counter() - t0 < PER_FILE_S


@settings(FUZZ, max_examples=300)
@given(seed=st.sampled_from(range(len(SEEDS))),
       edits=st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255), st.sampled_from("set cut dup")),
                      min_size=1, max_size=8))
def test_mutated_images_load_or_fail_in_one_line(tmp_path, seed, edits):
    data = bytearray(SEEDS[seed])
    for at, value, op in edits:
        at %= max(1, len(data))
        if op == "set":
            data[at] = value
        elif op == "cut":
            del data[at:at + value + 1]
        else:
            data[at:at] = data[at:at + value + 1] * 3
    p = tmp_path / "fuzz.img"
    p.write_bytes(bytes(data))
    _answer(p)


@settings(FUZZ, max_examples=120)
@given(w=st.integers(0, 2**31 - 1), h=st.integers(0, 2**31 - 1))
def test_any_claimed_png_size_is_cheap(tmp_path, w, h):
    """A header may claim any size; the loader decides before decoding (the 20000x1 strip, the 65535^2 bomb)."""
    b = bytearray(SEEDS[0])
    b[16:24] = struct.pack(">II", w, h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    p = tmp_path / "claim.png"
    p.write_bytes(bytes(b))
    _answer(p)


# -- model folders ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from img2text2img.models.captioner import create_captioner
    from img2text2img.models.generator import create_generator
    from img2text2img.models.tagger import create_tagger

    d = tmp_path_factory.mktemp("fuzz-models")
    torch.manual_seed(0)
    vocab = Vocabulary.build(["a red circle on the left", "a blue square"])
    create_captioner("small_cnn+lstm-tiny", vocab, 32).save(d / "captioner")
    create_tagger("small_cnn+rnn-tiny", vocab).save(d / "tagger")
    create_generator("pixel-tiny", vocab).save(d / "generator")
    return d


JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
                    | st.text(max_size=12),
                    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=8)


def _load(path) -> None:
    try:
        model = load_model(path)
        assert model is not None
    except I2TError as e:
        assert "\n" not in str(e) and str(e)


@settings(FUZZ, max_examples=150)
@given(kind=st.sampled_from(["captioner", "tagger", "generator"]), block=st.sampled_from(["config", "inference", None]),
       data=st.data())
def test_fuzzed_config_values_load_or_fail_in_one_line(folders, tmp_path, kind, block, data):
    """Any key of the network config or the inference settings (or the top level) set to any JSON value."""
    target = tmp_path / "m"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folders / kind, target)
    meta = json.loads((target / "config.json").read_text())
    where = meta if block is None else meta[block]
    keys = sorted(where) or ["beam_size"]
    key = data.draw(st.sampled_from(keys) | st.text(max_size=6), label="key")
    where[key] = data.draw(JSON, label="value")
    (target / "config.json").write_text(json.dumps(meta))
    _load(target)


@settings(FUZZ, max_examples=60)
@given(file=st.sampled_from(["model.safetensors", "vocab.json", "config.json"]), junk=st.binary(max_size=300),
       keep=st.integers(0, 400), resign=st.booleans())
def test_damaged_model_files_load_or_fail_in_one_line(folders, tmp_path, file, junk, keep, resign):
    """A file cut short and padded with junk, with the weights fingerprint re-signed as an attacker would."""
    target = tmp_path / "m"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(folders / "captioner", target)
    f = target / file
    f.write_bytes(f.read_bytes()[:keep] + junk)
    if resign and file == "model.safetensors":
        meta = json.loads((target / "config.json").read_text())
        meta["weights_sha256"] = sha256_file(f)
        (target / "config.json").write_text(json.dumps(meta))
    _load(target)
