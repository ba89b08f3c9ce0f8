"""Fast folders: `i2t caption DIR` / `i2t tag DIR` decode in a thread pool and run the model in batches, in input
order, with the same results as one photo at a time; any failure of one file is that file's line; a progress bar
only on a terminal; and the inference path imports no more than it needs."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest
from PIL import Image
from rich.console import Console

from img2text2img.cli import main, output
from img2text2img.data.shapes import render, scene
from img2text2img.errors import I2TError


@pytest.fixture
def shapes_folder(tmp_path):
    """12 shapes pictures (more than the few-photo path takes), named so that sorted order is not creation order."""
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(12):
        render(*scene(i, seed=7)[:2]).save(folder / f"{(i * 7) % 12:02d}.png")
    return folder


def test_batches_keep_input_order_and_bound_the_window(shapes_folder):
    inputs = output.ImageInputs([shapes_folder], workers=3)
    files = sorted(shapes_folder.iterdir())
    assert inputs.files == files
    got = [f for batch in inputs.batches(5) for f, _ in batch]
    assert got == files and [len(b) for b in output.ImageInputs([shapes_folder]).batches(5)] == [5, 5, 2]
    assert [f for f, _ in output.ImageInputs([shapes_folder, files[0]])] == [*files, files[0]]


def test_any_exception_decoding_one_file_is_its_failure_line(shapes_folder, monkeypatch):
    from img2text2img import data

    real = data.load_image
    bad = sorted(shapes_folder.iterdir())[3]

    def flaky(path, *a, **k):
        if path == bad:
            raise RuntimeError("decoder exploded\nsecond line")
        return real(path, *a, **k)

    monkeypatch.setattr(data, "load_image", flaky)
    inputs = output.ImageInputs([shapes_folder])
    got = [f for batch in inputs.batches(4) for f, _ in batch]
    assert bad not in got and len(got) == 11
    assert inputs.failed == [(str(bad), f"{bad}: RuntimeError (decoder exploded)")]
    with pytest.raises(I2TError, match="1 input"):
        inputs.finish("captioned")


def test_cli_folder_equals_one_photo_at_a_time_in_input_order(shapes_folder, capsys):
    files = sorted(shapes_folder.iterdir())
    assert main(["caption", str(shapes_folder), "--data", "shapes", "--batch-size", "4", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in rows] == [str(f) for f in files]
    import img2text2img as i2t

    alone = [i2t.caption([f], data="shapes")[0] for f in files[:3]]
    assert [r["caption"] for r in rows[:3]] == [a.text for a in alone]
    assert [r["logprob"] for r in rows[:3]] == [round(a.logprob, 4) for a in alone]

    assert main(["tag", str(shapes_folder), "--data", "shapes", "--batch-size", "5", "--top", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(f) for f in files]
    want = i2t.tag(files[:2], data="shapes", top=3)
    assert [line.split("\t")[1] for line in lines[:2]] == [", ".join(f"{t} ({s:.2f})" for t, s in w) for w in want]


@pytest.mark.skipif(not hasattr(os, "symlink"), reason="no symbolic links here")
def test_dangling_links_and_link_loops_are_listed_failures(shapes_folder, capsys):
    (shapes_folder / "gone.png").symlink_to(shapes_folder / "never-there.png")
    (shapes_folder / "loop.png").symlink_to(shapes_folder / "loop.png")
    (shapes_folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not really a jpeg")
    assert main(["caption", str(shapes_folder), "--data", "shapes", "--beam", "1"]) == 2
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 12
    failed = [line for line in out.err.splitlines() if line.startswith("failed:")]
    assert len(failed) == 3 and all(any(n in line for line in failed) for n in ("gone.png", "loop.png", "broken.jpg"))
    assert out.err.splitlines()[-1] == "error: 3 input(s) could not be captioned (listed above)"


def test_progress_bar_only_for_many_images_on_a_terminal(monkeypatch):
    buf = io.StringIO()
    monkeypatch.setattr(output, "err_console", Console(file=buf, force_terminal=True, width=80))
    with output.progress_bar(60, "captioning") as advance:
        advance(60)
    assert "captioning" in buf.getvalue()
    buf.truncate(0)
    with output.progress_bar(output.PROGRESS_OVER, "captioning") as advance:
        advance(50)
    assert buf.getvalue() == ""
    monkeypatch.setattr(output, "err_console", Console(file=buf, force_terminal=False))
    with output.progress_bar(500, "captioning") as advance:
        advance(500)
    assert buf.getvalue() == ""


def test_preprocessing_is_torchvisions_to_the_bit_without_importing_it():
    T = pytest.importorskip("torchvision.transforms")
    import torch

    from img2text2img.models.encoders.base import Preprocess, imagenet_preprocess

    pics = [render(*scene(i, seed=1)[:2]).resize(size) for i, size in
            enumerate([(500, 375), (375, 500), (333, 333), (41, 60), (61, 40), (256, 257)])]
    for p in (imagenet_preprocess(), imagenet_preprocess(interp="bicubic", half=True),
              Preprocess(64, 48, (0.5,) * 3, (0.5,) * 3, "nearest")):
        mode = getattr(T.InterpolationMode, p.interpolation.upper())
        ref = T.Compose([T.Resize(p.resize_size, interpolation=mode), T.CenterCrop(p.image_size), T.ToTensor(),
                         T.Normalize(p.mean, p.std)])
        for im in pics:
            assert torch.equal(ref(im), p.transform()(im))


def test_captioning_shapes_with_torch_imports_neither_torchvision_nor_timm_nor_onnx(tmp_path):
    # the torch path (the torch-free one imports no torch at all: tests/test_integration.py)
    img = tmp_path / "a.png"
    render(*scene(0, seed=2)[:2]).save(img)
    code = ("import sys; from img2text2img.cli import main; "
            "rc = main(['caption', sys.argv[1], '--data', 'shapes', '--backend', 'torch']);"
            "heavy = sorted(m for m in ('torchvision', 'timm', 'onnx', 'onnxruntime', 'nltk', 'pycocoevalcap', "
            "'scipy') if m in sys.modules); print(rc, heavy)")
    out = subprocess.run([sys.executable, "-c", code, str(img)], capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[-1] == "0 []"


def test_few_photos_skip_the_fast_encoder_export_and_agree_with_the_batched_path(shapes_folder):
    from img2text2img.models import load_model
    from img2text2img.models.captioner.api import FEW_IMAGES, caption_loaded

    cap = load_model("shapes-captioner")
    pics = [Image.open(f).convert("RGB") for f in sorted(shapes_folder.iterdir())[:FEW_IMAGES - 1]]
    few = caption_loaded(cap, pics)
    assert getattr(cap, "_fast_encoder", None) is None  # nothing built for a few photos
    batched = cap.caption_images(pics)
    assert [r.text for r in few] == [r.text for r in batched]
    assert [round(r.logprob, 4) for r in few] == [round(r.logprob, 4) for r in batched]


def test_bulk_tagger_tags_like_the_tagger_and_keeps_its_fast_encoder(shapes_folder):
    from img2text2img.models import load_model
    from img2text2img.models.tagger.model import FEW_IMAGES, BulkTagger

    tagger = load_model("shapes-tagger")
    pics = [Image.open(f).convert("RGB") for f in sorted(shapes_folder.iterdir())]
    bulk = BulkTagger(tagger)
    few = bulk(pics[:FEW_IMAGES - 1], top=4)
    assert bulk.fast is None  # a few photos: nothing built
    many = bulk(pics, top=4, batch_size=5)
    built = bulk.fast
    assert built is not None and bulk(pics[:2], top=4) and bulk.fast is built
    want = tagger.tag_images(pics, top=4)

    def rounded(rows):  # batch sizes move float rounding in the last digits only
        return [[(t, round(s, 4)) for t, s in r] for r in rows]

    assert rounded(many) == rounded(want) and rounded(few) == rounded(want[:FEW_IMAGES - 1])
