"""Datasets: shapes are deterministic and their captions are true to the pixels; Flickr8k reads completely."""
from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest

from img2text2img.data import load_dataset, read_caption_folder
from img2text2img.data.augment import AugmentConfig, augment, rewrite_directions
from img2text2img.data.shapes import (
    CELL_NAMES,
    COLOURS,
    SIZES,
    draw_caption,
    generate_shapes,
    relation,
    render,
    scene,
    scene_from_caption,
)
from img2text2img.errors import I2TError


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.name.encode() + p.read_bytes())
    return h.hexdigest()


def test_shapes_deterministic_and_layout(tmp_path):
    a = generate_shapes(tmp_path / "a", n=40, seed=3)
    b = generate_shapes(tmp_path / "b", n=40, seed=3)
    c = generate_shapes(tmp_path / "c", n=40, seed=4)
    assert _digest(a) == _digest(b) != _digest(c)
    ds = read_caption_folder(a)
    assert len(ds.captions) == 40 and all(len(v) == 5 for v in ds.captions.values())
    assert sum(len(v) for v in ds.splits.values()) == 40 and len(ds.splits["train"]) == 32
    assert len(ds.tags) == 40


def _nearest_colour(rgb):
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], rgb)))


@pytest.mark.parametrize("index", range(60))
def test_shapes_caption_truth(index):
    """Render, then check each named colour sits at the position the scene (and so the caption) gives it."""
    background, specs, caps = scene(index, seed=0)
    size = 64
    im = np.asarray(render(background, specs, size)).astype(int)
    for s in specs:
        cx, cy = s.centre(size)
        assert _nearest_colour(im[int(cy), int(cx)]) == s.colour
        assert s.phrase() in " ".join(caps) or f"{s.colour} {s.shape}" in " ".join(caps)
        # Pixels of this colour are inside the shape's cell, around its centre.
        mask = np.all(np.abs(im - np.array(COLOURS[s.colour])) < 30, axis=-1)
        ys, xs = np.nonzero(mask)
        r = SIZES[s.size] * size / 2 + 2
        near = (np.abs(xs - cx) <= r) & (np.abs(ys - cy) <= r)
        assert near.sum() >= 0.5 * np.pi * (SIZES[s.size] * size / 2) ** 2 * 0.3
    if len(specs) == 2:
        a, b = specs
        rel = relation(a, b)
        ax, ay = a.centre(size)
        bx, by = b.centre(size)
        truth = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}
        assert truth[rel]
        assert f"{a.phrase()} {rel} a {b.phrase()}" in caps[0]


def test_shapes_speed_1000_under_30s(tmp_path):
    import time

    t = time.time()
    generate_shapes(tmp_path / "s", n=1000)
    assert time.time() - t < 30


def test_scene_from_caption_makes_every_caption_true():
    """The rule-based drawing of a caption (the round-trip ceiling) must satisfy everything the caption says."""
    for index in range(150):
        background, specs, captions = scene(index, seed=3)
        for k, cap in enumerate(captions):
            bg2, got = scene_from_caption(cap, random.Random(k))
            assert len(got) == len(specs), cap
            if background in cap.split():
                assert bg2 == background, cap
            said = [s for s in specs if f"{s.colour} {s.shape}" in cap]
            for s in said:  # each mentioned shape is drawn with its colour (and its size when the caption says it)
                match = [g for g in got if (g.colour, g.shape) == (s.colour, s.shape)]
                assert match, cap
                if f"{s.size} {s.colour} {s.shape}" in cap or f"that is {s.size}" in cap:
                    assert any(g.size == s.size for g in match), cap
            if len(specs) == 1 and CELL_NAMES[(specs[0].col, specs[0].row)] in cap:
                assert (got[0].col, got[0].row) == (specs[0].col, specs[0].row), cap
            for rel in ("to the left of", "to the right of", "above", "below"):
                if f" {rel} " in cap:  # always said of the first two shapes named, in caption order
                    assert relation(got[0], got[1]) == rel, cap
    assert np.array_equal(np.asarray(draw_caption("a large red circle in the top left", seed=1)),
                          np.asarray(draw_caption("a large red circle in the top left", seed=1)))


def test_rewrite_directions():
    assert rewrite_directions("a red circle to the left of a blue star", "hflip") == "a red circle to the right of a blue star"
    assert rewrite_directions("a red circle to the left of a blue star", "rot90", 1) == "a red circle below a blue star"
    assert rewrite_directions("a red circle above a blue star", "rot90", 2) == "a red circle below a blue star"
    assert rewrite_directions("a red circle in the top left", "rot90", 1) == "a red circle in the bottom left"
    assert rewrite_directions("a man turning left", "hflip") == "a man turning right"


def test_augmented_shape_caption_stays_true():
    """Flip/rotate a two-shape scene and check the rewritten relation against the transformed pixels."""
    rng = random.Random(0)
    cfg = AugmentConfig(rot90=True, hflip=True)
    checked = 0
    for index in range(40):
        background, specs, caps = scene(index, seed=0)
        if len(specs) != 2 or specs[0].colour == specs[1].colour:
            continue
        img, cap = augment(render(background, specs, 64), caps[0], cfg, rng)
        a, b = specs
        im = np.asarray(img).astype(int)

        def centre(colour, im=im):
            ys, xs = np.nonzero(np.all(np.abs(im - np.array(COLOURS[colour])) < 30, axis=-1))
            return xs.mean(), ys.mean()

        (ax, ay), (bx, by) = centre(a.colour), centre(b.colour)
        truth = {"to the left of": ax < bx, "to the right of": ax > bx, "above": ay < by, "below": ay > by}
        rel = next(r for r in truth if f" {r} " in cap)
        assert truth[rel], (cap, ax, ay, bx, by)
        checked += 1
    assert checked >= 5


def test_missing_dataset_is_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setenv("I2T_DATA", str(tmp_path / "nowhere"))
    monkeypatch.setenv("I2T_SHARED", str(tmp_path / "noshared"))
    monkeypatch.chdir(tmp_path)
    from img2text2img import locations

    monkeypatch.setattr(locations, "shared_roots", lambda: [tmp_path / "noshared"])
    with pytest.raises(I2TError) as e:
        load_dataset("flickr8k")
    assert "\n" not in str(e.value) and "I2T_DATA" in str(e.value)


def test_flickr8k_reader_counts():
    from img2text2img import locations

    try:
        root = locations.flickr8k_dir()
    except I2TError:
        pytest.skip("shared Flickr8k copy not present")
    ds = load_dataset("flickr8k")
    n_files = len(list((root / "images").glob("*.jpg")))
    assert len(ds.captions) == n_files == 8091
    assert all(len(c) == 5 for c in ds.captions.values())
    for split in ("train", "val", "test"):
        listed = [ln for ln in (root / "splits" / f"{split}.txt").read_text().splitlines() if ln.strip()]
        assert len(ds.split(split)) == len(listed)
    assert (len(ds.split("train")), len(ds.split("val")), len(ds.split("test"))) == (6000, 1000, 1000)
    assert all(ds.image_path(i).exists() for i in ds.split("test"))
