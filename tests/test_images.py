"""Every awkward image file a user can hand us becomes RGB or a one-line error (issue: reliability)."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from img2text2img.data.images import list_images, load_image, to_rgb
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
    r, g, _ = load_image(p).getpixel((4, 4))
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
    p.write_bytes(_png_claiming(20000, 20000))  # a small file whose header says 400 Mpx
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


# -- issue 42: bounded cost, any decoder failure is the file's, every mode scaled by its value range -----------------


def _png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (a bomb's header without its data)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    b[16:24] = struct.pack(">II", w, h)
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(b[12:29])) & 0xFFFFFFFF)
    return bytes(b)


@pytest.mark.parametrize("size,match", [
    ((20000, 1), "too elongated"),  # the short-side resize would make it 5,120,000 x 256
    ((100000, 1), "too elongated"),
    ((1, 30000), "too elongated"),
    ((32, 2_162_720), "too elongated"),  # the fuzzed TIFF that stalled a batch
    ((20000, 20000), "pixel limit"),
    ((0, 0), "no pixels|broken|not an image"),
])
def test_costly_shapes_refused_before_decoding(tmp_path, size, match):
    p = tmp_path / "x.png"
    p.write_bytes(_png_claiming(*size))
    with pytest.raises(I2TError, match=match) as e:
        load_image(p)
    assert "\n" not in str(e.value) and str(p) in str(e.value)


def test_real_strip_png_refused(tmp_path):
    p = _save(Image.new("L", (20000, 1)), tmp_path / "strip.png")  # a few hundred bytes
    with pytest.raises(I2TError, match="aspect ratio above 50:1"):
        load_image(p)
    ok = _save(Image.new("RGB", (500, 10)), tmp_path / "panorama.png")  # 50:1 is still a picture
    assert load_image(ok).size == (500, 10)


@pytest.mark.parametrize("exc", [NotImplementedError("unsupported TIFF compression"), MemoryError(), ZeroDivisionError(),
                                 struct.error("unpack requires a buffer")])
def test_any_decoder_exception_is_that_files_failure(tmp_path, monkeypatch, exc):
    p = _save(Image.new("RGB", (8, 8)), tmp_path / "a.png")

    def explode(self, *a, **k):
        raise exc

    monkeypatch.setattr(Image.Image, "load", explode)
    with pytest.raises(I2TError) as e:
        load_image(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_symlinks_fifos_and_loops_are_listed_and_fail(tmp_path):
    import os

    _save(Image.new("RGB", (4, 4)), tmp_path / "a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "dangling.png")
    os.symlink(tmp_path / "loop2.jpg", tmp_path / "loop1.jpg")
    os.symlink(tmp_path / "loop1.jpg", tmp_path / "loop2.jpg")
    os.mkfifo(tmp_path / "pipe.png")
    found, _ = list_images([tmp_path])
    assert [p.name for p in found] == ["a.png", "dangling.png", "loop1.jpg", "loop2.jpg", "pipe.png"]
    for name, match in (("dangling.png", "dangling symbolic link"), ("loop1.jpg", "symbolic link loop"),
                        ("pipe.png", "not a regular file")):
        with pytest.raises(I2TError, match=match):
            load_image(tmp_path / name)  # the pipe is refused before it is opened: nothing blocks


def _pixel(img):
    return to_rgb(img).getpixel((0, 0))


def test_wide_modes_scaled_by_value_range():
    u16 = lambda v: Image.fromarray(np.full((4, 4), v, np.uint16))
    assert _pixel(u16(65535)) == (255, 255, 255)
    assert _pixel(u16(257)) == (1, 1, 1)  # 16-bit data, dark: not brightened 257x
    assert _pixel(u16(200)) == (1, 1, 1)
    assert _pixel(Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")) == (128, 128, 128)
    assert _pixel(Image.fromarray(np.full((4, 4), 200.0, np.float32), "F")) == (200, 200, 200)  # 8-bit values
    assert _pixel(Image.fromarray(np.full((4, 4), 40000, np.int32), "I")) == (156, 156, 156)  # a 16-bit file as I
    ramp = Image.fromarray(np.linspace(-1000.0, 3000.0, 16, dtype=np.float32).reshape(4, 4), "F")
    out = np.asarray(to_rgb(ramp))
    assert out.min() == 0 and out.max() == 255  # any other range: stretched over its values
    nan = Image.fromarray(np.array([[np.nan, 0.0], [1.0, np.inf]], np.float32), "F")
    assert to_rgb(nan).mode == "RGB"


@pytest.mark.parametrize("mode", ["RGBA", "LA", "La", "L", "P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "1", "RGBX", "RGBa",
                                  "I;16", "I;16B", "I", "F"])
def test_every_mode_becomes_rgb(mode):
    from img2text2img.data.images import prepare_image

    img = Image.new(mode, (6, 5))
    out = prepare_image(img)
    assert out.mode == "RGB" and out.size == (6, 5)


def test_prepare_image_refuses_what_is_not_a_small_enough_picture():
    from img2text2img.data.images import prepare_image

    with pytest.raises(I2TError, match="too elongated"):
        prepare_image(Image.new("L", (20000, 1)))
    with pytest.raises(I2TError, match="expected a PIL image"):
        prepare_image(np.zeros((4, 4, 3)))
