"""The Flickr8k converter, run on a tiny fake pair of release archives (no network)."""
from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

from PIL import Image

from img2text2img.data import read_caption_folder

ROOT = Path(__file__).resolve().parent.parent


def _script():
    spec = importlib.util.spec_from_file_location("download_flickr8k", ROOT / "scripts" / "download_flickr8k.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_convert_fake_archives(tmp_path):
    names = ["1_a.jpg", "2_b.jpg", "3_c.jpg"]
    with zipfile.ZipFile(tmp_path / "img.zip", "w") as z:
        for n in names:
            buf = io.BytesIO()
            Image.new("RGB", (50, 30), (200, 10, 10)).save(buf, "JPEG")
            z.writestr(f"Flicker8k_Dataset/{n}", buf.getvalue())
        z.writestr("__MACOSX/Flicker8k_Dataset/._1_a.jpg", b"junk")
    tokens = "".join(f"{n}#{k}\tcaption {k} of {n} .\n" for n in names + ["9_missing.jpg"] for k in range(5))
    with zipfile.ZipFile(tmp_path / "txt.zip", "w") as z:
        z.writestr("Flickr8k.token.txt", tokens)
        z.writestr("Flickr_8k.trainImages.txt", "1_a.jpg\n2_b.jpg\n")
        z.writestr("Flickr_8k.devImages.txt", "3_c.jpg\n")
        z.writestr("Flickr_8k.testImages.txt", "9_missing.jpg\n")
    out = _script().convert(tmp_path / "img.zip", tmp_path / "txt.zip", tmp_path / "f8k", size=32)
    ds = read_caption_folder(out)
    assert sorted(ds.captions) == names and all(len(c) == 5 for c in ds.captions.values())
    assert ds.splits == {"train": ["1_a.jpg", "2_b.jpg"], "val": ["3_c.jpg"], "test": []}
    assert Image.open(ds.image_path("1_a.jpg")).size == (32, 32)
    assert ds.captions["2_b.jpg"][3] == "caption 3 of 2_b.jpg ."
