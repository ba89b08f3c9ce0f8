"""Every awkward image file a user can hand us becomes RGB or a one-line error (issue: reliability)."""
from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from img2text2img.data.images import list_images, load_image
from img2text2img.errors import I2TError


def _save(img, path, **kw):
    img.save(path, **kw)
    return path


def test_modes_become_rgb(tmp_path):
    cases = {
        "alpha.png": Image.new("RGBA", (10, 10), (255, 0, 0, 0)),
        "grey.png": Image.new("L", (10, 10), 100),
        "palette.png": Image.new("RGB", (10, 10), (0, 0, 255)).convert("P"),
        "cmyk.jpg": Image.new("CMYK", (10, 10), (0, 255, 255, 0)),
        "one.png": Image.new("RGB", (1, 1), (1, 2, 3)),
    }
    for name, img in cases.items():
        out = load_image(_save(img, tmp_path / name))
        assert out.mode == "RGB" and out.size == img.size, name
    # Fully transparent pixels are composited on white, not black.
    assert load_image(tmp_path / "alpha.png").getpixel((0, 0)) == (255, 255, 255)


def test_16bit_png_scaled_not_clipped(tmp_path):
    a = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600)
    p = tmp_path / "deep.png"
    Image.fromarray(a).save(p)
    out = np.asarray(load_image(p))
    assert out.shape == (10, 10, 3) and out.max() > 200 and out.min() == 0 and len(np.unique(out)) > 50


def test_animated_gif_first_frame(tmp_path):
    frames = [Image.new("RGB", (8, 8), c) for c in ((255, 0, 0), (0, 255, 0))]
    p = tmp_path / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    r, g, b = load_image(p).getpixel((4, 4))
    assert r > 200 and g < 50


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = tmp_path / "rot.jpg"
    img.save(p, exif=exif.tobytes())
    assert load_image(p).size == (20, 40)


@pytest.mark.parametrize("make,match", [
    (lambda p: p, "not found"),
    (lambda p: (p.write_bytes(b""), p)[1], "empty file"),
    (lambda p: (p.write_text("hello, I am text"), p)[1], "not an image"),
])
def test_bad_files(tmp_path, make, match):
    p = make(tmp_path / "x.jpg")
    with pytest.raises(I2TError, match=match) as e:
        load_image(p)
    assert "\n" not in str(e.value)


def test_truncated_jpeg(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    p = tmp_path / "t.jpg"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(I2TError, match="broken or truncated"):
        load_image(p)


def test_decompression_bomb(tmp_path):
    p = tmp_path / "huge.png"
    Image.new("1", (20000, 20000)).save(p)  # 1-bit: a small file that decodes to 400 Mpx
    with pytest.raises(I2TError, match="pixel limit"):
        load_image(p)


def test_folder_listing_skips_non_images(tmp_path):
    _save(Image.new("RGB", (4, 4)), tmp_path / "a.png")
    (tmp_path / "notes.txt").write_text("x")
    found, skipped = list_images([tmp_path, tmp_path / "missing.jpg"])
    assert [p.name for p in found] == ["a.png"]
    assert {p.name for p, _ in skipped} == {"notes.txt", "missing.jpg"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=0, max_size=2000), st.sampled_from([b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"GIF89a"]))
def test_fuzz_loader_random_bytes(tmp_path, data, magic):
    p = tmp_path / "fuzz.jpg"
    p.write_bytes(magic + data)
    try:
        img = load_image(p)
        assert img.mode == "RGB"
    except I2TError as e:
        assert "\n" not in str(e)
