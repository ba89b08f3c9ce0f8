"""Feature cache: cached == fresh (fp16 tolerance), hits, subsets, resume after interruption, no-cache mode."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from img2text2img.data import load_dataset, load_image
from img2text2img.data.shapes import generate_shapes
from img2text2img.errors import I2TError
from img2text2img.features import FeatureCache, encode_dataset, list_caches
from img2text2img.models.encoders import create_encoder


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes")
    generate_shapes(root, n=40, seed=3)
    return load_dataset(root)


def _encoder(seed: int = 0):
    torch.manual_seed(seed)
    return create_encoder("small_cnn", pretrained=False).eval()


def _fresh(enc, ds, names):
    tf = enc.transform()
    x = torch.stack([tf(load_image(ds.image_path(n))) for n in names])
    with torch.no_grad():
        return enc(x)


def test_cache_equals_fresh_and_is_reused(shapes, tmp_path):
    enc = _encoder()
    cache = encode_dataset("small_cnn", shapes, batch_size=16, num_workers=0, cache_dir=tmp_path, progress=False,
                           encoder=enc)
    assert cache.info["status"] == "built" and len(cache) == 40
    assert cache.num_features == 64 and cache.grid_shape == (64, 64) and cache.grid_hw == (8, 8)
    assert cache.pooled.dtype == np.float16 and isinstance(cache.grid, np.memmap)
    names = shapes.images[5:12][::-1]
    p, g = _fresh(enc, shapes, names)
    assert torch.allclose(cache.pooled_for(names), p, rtol=1e-2, atol=1e-3)
    assert torch.allclose(cache.grid_for(names), g, rtol=1e-2, atol=1e-3)
    assert cache.pooled_for(names).dtype == torch.float32
    # same key: opened, not rebuilt; a subset and grid=False are served by the same cache
    again = encode_dataset("small_cnn", shapes, cache_dir=tmp_path, progress=False, encoder=enc)
    assert again.info["status"] == "hit" and again.path == cache.path
    sub = encode_dataset("small_cnn", shapes, images=names, grid=False, cache_dir=tmp_path, progress=False,
                         encoder=enc)
    assert sub.path == cache.path
    assert [c["complete"] for c in list_caches(tmp_path)] == [True]
    # different weights -> a different cache
    other = encode_dataset("small_cnn", shapes, num_workers=0, cache_dir=tmp_path, progress=False,
                           encoder=_encoder(seed=1))
    assert other.path != cache.path
    assert not torch.allclose(other.pooled_for(names), cache.pooled_for(names))
    import pickle

    blob = pickle.dumps(cache)
    assert len(blob) < 10_000  # reopened by path in the receiving process, not copied
    assert torch.equal(pickle.loads(blob).grid_for(names), cache.grid_for(names))
    with pytest.raises(I2TError, match="not in the feature cache"):
        cache.pooled_for(["nope.png"])


def test_pooled_only_cache(shapes, tmp_path):
    cache = encode_dataset("small_cnn", shapes, grid=False, num_workers=0, cache_dir=tmp_path, progress=False,
                           encoder=_encoder())
    assert not cache.has_grid and not (cache.path / "grid.npy").exists()
    with pytest.raises(I2TError, match="no grid"):
        cache.grid_for(shapes.images[:1])


def test_interrupted_build_resumes(shapes, tmp_path, monkeypatch):
    import img2text2img.features as F

    enc = _encoder()
    calls = {"n": 0}
    real = F._write_json_atomic

    def flaky(path, obj):  # die after the third batch has been recorded
        real(path, obj)
        if path.name == "progress.json" and obj.get("done", 0) > 0:
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt

    monkeypatch.setattr(F, "_write_json_atomic", flaky)
    with pytest.raises(KeyboardInterrupt):
        encode_dataset("small_cnn", shapes, batch_size=8, num_workers=0, cache_dir=tmp_path, progress=False,
                       encoder=enc)
    partial = [c for c in list_caches(tmp_path) if not c["complete"]]
    assert len(partial) == 1 and partial[0]["done"] == 24
    monkeypatch.setattr(F, "_write_json_atomic", real)
    cache = encode_dataset("small_cnn", shapes, batch_size=8, num_workers=0, cache_dir=tmp_path, progress=False,
                           encoder=enc)
    assert cache.info["status"] == "resumed" and cache.info["resumed_from"] == 24
    assert not Path(str(cache.path) + ".partial").exists()
    p, g = _fresh(enc, shapes, shapes.images)
    assert torch.allclose(cache.pooled_for(shapes.images), p, rtol=1e-2, atol=1e-3)
    assert torch.allclose(cache.grid_for(shapes.images), g, rtol=1e-2, atol=1e-3)
    meta = json.loads((cache.path / "meta.json").read_text())
    assert meta["complete"] and meta["resumed_from"] == 24


def test_no_cache_touches_no_files_and_workers_work(shapes, tmp_path):
    enc = _encoder()
    cache = encode_dataset("small_cnn", shapes, images=shapes.images[:10], batch_size=4, num_workers=2,
                           cache_dir=tmp_path, progress=False, encoder=enc, use_cache=False)
    assert cache.path is None and list_caches(tmp_path) == []
    p, _ = _fresh(enc, shapes, shapes.images[:10])
    assert torch.allclose(cache.pooled_for(shapes.images[:10]), p, rtol=1e-2, atol=1e-3)


def test_broken_image_is_one_line_error(shapes, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(shapes.root, root)
    ds = load_dataset(root)
    ds.image_path(ds.images[3]).write_bytes(b"not a png")
    with pytest.raises(I2TError) as e:
        encode_dataset("small_cnn", ds, num_workers=0, cache_dir=tmp_path / "c", progress=False, encoder=_encoder())
    assert "\n" not in str(e.value) and ds.images[3] in str(e.value)


def test_open_refuses_partial(tmp_path):
    (tmp_path / "meta.json").write_text(json.dumps({"version": 1, "complete": False}))
    with pytest.raises(I2TError, match="incomplete"):
        FeatureCache.open(tmp_path)


def test_flickr8k_cache_matches_fresh_mobilenet(tmp_path):
    """With the shared weights and photos: cached MobileNetV2 features equal freshly computed ones (fp16)."""
    try:
        enc = create_encoder("mobilenet_v2")
        ds = load_dataset("flickr8k")
    except I2TError as e:
        pytest.skip(str(e))
    names = ds.images[:6]
    cache = encode_dataset("mobilenet_v2", ds, images=names, batch_size=3, num_workers=0, cache_dir=tmp_path,
                           progress=False, encoder=enc)
    assert cache.num_features == 1280 and cache.grid_shape == (49, 1280)
    assert cache.meta["encoder"]["weights_sha256"] == enc.weights_sha256
    p, g = _fresh(enc, ds, names)
    assert torch.allclose(cache.pooled_for(names), p, rtol=1e-2, atol=2e-3)
    assert torch.allclose(cache.grid_for(names), g, rtol=1e-2, atol=2e-3)


def test_cli_encode_and_list(shapes, tmp_path, capsys):
    from img2text2img.cli import main

    args = ["encode", "--encoder", "small_cnn", "--data", str(shapes.root), "--cache-dir", str(tmp_path),
            "--workers", "0", "--no-grid", "--device", "cpu", "--threads", "2"]
    assert main(args) == 0
    caches = list_caches(tmp_path)
    assert len(caches) == 1 and caches[0]["complete"] and caches[0]["grid"] is False and caches[0]["done"] == 40
    assert main(args[:7] + ["--workers", "0", "--no-cache"]) == 0 and len(list_caches(tmp_path)) == 1
    assert main(["encode", "--encoder", "googlenet", "--data", str(shapes.root), "--cache-dir", str(tmp_path)]) == 2
    assert "googlenet-1378be20.pth" in capsys.readouterr().err
    assert main(["encoders"]) == 0
    assert "inception_v3" in capsys.readouterr().out
