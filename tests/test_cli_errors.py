"""Bad input at the command line: one line on stderr, exit code 2, no traceback, no half-written file."""
from __future__ import annotations

import io
import shutil

import pytest
import torch
from PIL import Image

from img2text2img.cli import main
from img2text2img.errors import I2TError
from img2text2img.models.captioner import create_captioner
from img2text2img.models.encoders import create_encoder
from img2text2img.models.generator import create_generator
from img2text2img.vocab import Vocabulary

WORDS = ["a red circle on the left", "a blue square at the top", "a small green star"]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Untrained tiny models: error handling does not depend on how good the weights are."""
    d = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    vocab = Vocabulary.build(WORDS)
    enc = create_encoder("small_cnn", pretrained=False)
    cap = create_captioner("small_cnn+lstm-tiny", vocab, enc.num_features, store_encoder=True)
    cap.attach_encoder(enc)
    cap.save(d / "cap")
    create_generator("pixel-tiny", vocab).save(d / "gen")
    return d


def _err(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    return err


def _one_line_error(capsys, *needles):
    err = _err(capsys)
    last = err.splitlines()[-1]
    assert last.startswith("error:"), err
    for n in needles:
        assert n in err, err
    return err


def test_caption_folder_with_mixed_files(models, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (30, 30), (200, 0, 0)).save(folder / "good.png")
    Image.new("RGBA", (30, 30), (0, 0, 200, 100)).save(folder / "alpha.png")
    Image.new("L", (30, 30), 90).save(folder / "grey.png")
    (folder / "text.jpg").write_text("not an image")
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "notes.txt").write_text("ignored: not an image type")
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (1, 2, 3)).save(buf, "JPEG")
    (folder / "trunc.jpg").write_bytes(buf.getvalue()[:100])
    assert main(["caption", str(folder), "--model", str(models / "cap"), "--beam", "1"]) == 2
    out = capsys.readouterr()
    for good in ("good.png", "alpha.png", "grey.png"):
        assert good in out.out
    for bad in ("text.jpg", "zero.jpg", "trunc.jpg"):
        assert f"failed: {folder / bad}" in out.err
    assert out.err.strip().splitlines()[-1] == "error: 3 input(s) could not be captioned (listed above)"


@pytest.mark.parametrize("args,needle", [
    (["caption", "nope.jpg"], "no images found"),
    (["caption", "{img}", "--model", "{models}/missing"], "model folder not found"),
    (["caption", "{img}", "--model", "{models}/gen"], "holds a generator model, not a captioner"),
    (["generate", "a red circle", "--model", "{models}/cap", "-o", "{tmp}/x.png"], "holds a captioner model, not a generator"),
    (["generate", "a red circle", "--data", "coco", "-o", "{tmp}/x.png"], "--data must be one of: shapes, flickr8k"),
    (["train", "generator", "--z-dim", "4", "--out", "{tmp}/g"], "--z-dim is a vae/gan/latent-gan option"),
    (["train", "captioner", "--init-from", "{models}/cap", "--glove", "--out", "{tmp}/c"],
     "--glove cannot change when a run starts from --init-from (the network is kept)"),
])
def test_model_and_path_errors(models, tmp_path, capsys, args, needle):
    img = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(img)
    args = [a.format(img=img, models=models, tmp=tmp_path) for a in args]
    assert main(args) == 2
    _one_line_error(capsys, needle)


@pytest.mark.parametrize("damage,needle", [
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:100]), "corrupt or truncated"),
    (lambda p: (p / "vocab.json").unlink(), "missing vocab.json"),
    (lambda p: Vocabulary.build(["x y z"]).save(p / "vocab.json"), "does not match"),
])
def test_damaged_model_folder(models, tmp_path, capsys, damage, needle):
    bad = tmp_path / "gen"
    shutil.copytree(models / "gen", bad)
    damage(bad)
    assert main(["generate", "a red circle", "--model", str(bad), "-o", str(tmp_path / "o.png")]) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "o.png").exists()


@pytest.mark.parametrize("prompt,ok,needle", [
    ("", False, "empty prompt"),
    ("   ", False, "empty prompt"),
    ("zebra xylophone", True, "never seen"),
    ("a red circle " * 1000, True, "characters"),
    ("🐶 東京 ✨", True, "never seen"),
])
def test_prompts(models, tmp_path, capsys, prompt, ok, needle):
    out = tmp_path / "p.png"
    code = main(["generate", prompt, "--model", str(models / "gen"), "-o", str(out)])
    err = _err(capsys)
    assert needle in err
    assert (code == 0) == ok and out.exists() == ok


def test_outputs(models, tmp_path, capsys):
    gen = ["generate", "a red circle", "--model", str(models / "gen")]
    # a missing folder is created (documented in docs/ERRORS.md)
    assert main([*gen, "-o", str(tmp_path / "new" / "dir" / "a.png")]) == 0
    assert (tmp_path / "new" / "dir" / "a.png").exists()
    # an existing file is kept unless --force
    before = (tmp_path / "new" / "dir" / "a.png").read_bytes()
    assert main([*gen, "--seed", "3", "-o", str(tmp_path / "new" / "dir" / "a.png")]) == 2
    _one_line_error(capsys, "--force")
    assert (tmp_path / "new" / "dir" / "a.png").read_bytes() == before
    assert main([*gen, "--force", "-o", str(tmp_path / "new" / "dir" / "a.png")]) == 0
    capsys.readouterr()
    # an unwritable location (sysfs refuses new files even to root) and a file standing where a folder should be
    assert main([*gen, "-o", "/sys/i2t-test.png"]) == 2
    _one_line_error(capsys, "Permission denied")
    (tmp_path / "file").write_text("x")
    assert main([*gen, "-o", str(tmp_path / "file" / "a.png")]) == 2
    _one_line_error(capsys)


def test_generate_with_the_built_in_flickr8k_generator(tmp_path):
    out = tmp_path / "dog.png"
    assert main(["generate", "a dog biting a stick", "--data", "flickr8k", "-n", "2", "-o", str(out)]) == 0
    from PIL import Image

    assert Image.open(out).size[1] == 64 + 2 * 2  # one row of two 64 px pictures with a 2 px border


def test_scripts_report_a_missing_model_in_one_line(tmp_path):
    """The scripts under scripts/ share the CLI's guard (run_reporting_errors): a missing --model folder is one line
    and exit code 2, as with `i2t`, not a traceback."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "scripts" / "tune_decoding.py"
    done = subprocess.run([sys.executable, str(script), "--model", str(tmp_path / "missing"), "--out",
                           str(tmp_path / "t.json")], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: model folder not found: {tmp_path / 'missing'}"]
    assert not (tmp_path / "t.json").exists()


# -- issue 42: nothing lost, no traceback, whatever the input -----------------------------------------------------


def _tree(path):
    """Every file under `path` with its bytes: what must be unchanged after a refused command."""
    return {p: p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def targets(models, tmp_path):
    """What a user may already have where a command writes: photos, a file, a model, a run, a model with notes."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "beach.jpg").write_bytes(b"my photo")
    (tmp_path / "notes.txt").write_text("my notes")
    shutil.copytree(models / "cap", tmp_path / "model")
    shutil.copytree(models / "cap", tmp_path / "noted" / "model")
    (tmp_path / "noted" / "model" / "README.txt").write_text("mine")
    shutil.copytree(models / "gen", tmp_path / "run" / "best")
    return tmp_path


@pytest.mark.parametrize("verb", ["average", "ensemble", "ship", "train", "shapes"])
@pytest.mark.parametrize("target,force", [("photos", True), ("notes.txt", True), ("model", False),
                                          ("noted/model", True), ("run", True), ("run", False)])
def test_writers_never_replace_what_is_not_theirs(models, targets, capsys, verb, target, force):
    writes_models = verb in ("average", "ensemble", "ship")
    needle = {
        "photos": "does not hold a",
        "notes.txt": "is a file",
        "model": "already holds a model; pass --force" if writes_models else "does not hold a",
        "noted/model": "other files (README.txt)" if writes_models else "does not hold a",
        "run": "already holds a training run; pass --force" if verb == "train" and not force else "does not hold a",
    }[target]
    if verb == "train" and target == "run" and force:
        pytest.skip("a run replaced with --force is the run's own kind (tests/test_engine.py)")
    out = targets / target
    argv = {
        "average": ["average", str(models / "cap"), str(models / "cap"), "--out", str(out)],
        "ensemble": ["ensemble", str(models / "cap"), str(models / "cap"), "--out", str(out)],
        "ship": ["ship", str(models / "gen"), "--as", str(out)],
        "train": ["train", "generator", "--kind", "pixel-tiny", "--data", "shapes:40", "--steps", "1", "--out",
                  str(out), "--data-dir", str(targets / "shapes"), "--device", "cpu"],
        "shapes": ["data", "shapes", "--out", str(out), "--n", "4"],
    }[verb] + (["--force"] if force else [])
    before = _tree(targets)
    assert main(argv) == 2
    _one_line_error(capsys, needle)
    assert _tree(targets) == before


@pytest.mark.parametrize("args,needle", [
    (["generate", "a red circle", "--guidance", "inf"], "guidance must be finite"),
    (["generate", "a red circle", "--guidance", "1e30"], "guidance must be between 0.0 and 100.0"),
    (["generate", "a red circle", "--temperature", "inf"], "temperature must be finite"),
    (["generate", "a red circle", "--seed", str(2**70)], "seed must be a whole number between 0 and 2**63-1"),
    (["generate", "a red circle", "--seed", "-1"], "seed must be"),
])
def test_generate_refuses_numbers_that_draw_nothing(models, tmp_path, capsys, args, needle):
    out = tmp_path / "x.png"
    assert main([*args, "--model", str(models / "gen"), "-o", str(out)]) == 2
    _one_line_error(capsys, needle)
    assert not out.exists()


@pytest.mark.parametrize("args,needle", [
    (["train", "generator", "--lr", "inf"], "--lr inf: must be a finite number"),
    (["train", "generator", "--seed", str(2**64)], "a seed must be between 0 and 2**63-1"),
    (["train", "generator", "--device", "bogus"], "not a device name"),
    (["train", "captioner", "--lr", "inf"], "--lr inf"),
    (["train", "tagger", "--seed", "-1"], "--seed -1"),
    (["data", "shapes", "--seed", str(2**70), "--n", "2"], "seed must be"),
    (["eval", "generator", "--size", "-5", "--n", "4"], "size must be between 16 and 1024"),
    (["caption", "{img}", "--device", "bogus"], "--device 'bogus'"),
    (["ship", "{models}/gen", "--set", "guidance=inf"], "key 'guidance' must be a finite number"),
])
def test_numbers_and_names_are_one_line_errors(models, tmp_path, capsys, args, needle):
    img = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(img)
    args = [a.format(img=img, models=models) for a in args]
    if args[0] == "train" or args[:2] == ["data", "shapes"]:
        args += ["--out", str(tmp_path / "o")]
    if args[0] == "ship":
        args += ["--as", str(tmp_path / "o")]
    assert main(args) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("key,value,needle", [
    ("hidden", "512", "key 'hidden' must be a whole number, got '512'"),
    ("hidden", -5, "key 'hidden' must be between 0 and 8192"),
    ("hidden", 10**9, "between 0 and 8192"),
    ("hidden", {"a": [1, None]}, "key 'hidden' must be a whole number"),
    ("dropout", float("nan"), "key 'dropout' must be a finite number"),
    ("decoder", 42, "key 'decoder' must be a string"),
    ("member_overrides", [{"hidden": "x"}], "member_overrides[0].hidden"),
    ("wings", 2, "does not know the keys wings"),
])
def test_bad_config_values_name_the_file_and_key(models, tmp_path, capsys, key, value, needle):
    import json

    bad = tmp_path / "cap"
    shutil.copytree(models / "cap", bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["config"][key] = value
    (bad / "config.json").write_text(json.dumps(meta))
    img = tmp_path / "i.png"
    Image.new("RGB", (8, 8)).save(img)
    assert main(["caption", str(img), "--model", str(bad)]) == 2
    err = _one_line_error(capsys, needle)
    assert str(bad / "config.json") in err


def test_huge_beam_width_in_a_models_settings_is_refused(models, tmp_path, capsys):
    import json

    bad = tmp_path / "cap"
    shutil.copytree(models / "cap", bad)
    meta = json.loads((bad / "config.json").read_text())
    meta["inference"] = {"beam_size": 10**6}
    (bad / "config.json").write_text(json.dumps(meta))
    Image.new("RGB", (8, 8)).save(tmp_path / "i.png")
    assert main(["caption", str(tmp_path / "i.png"), "--model", str(bad)]) == 2
    _one_line_error(capsys, "CaptionSettings: key 'beam_size' must be between 1 and 20")


def test_api_takes_pil_images_in_any_mode(models):
    import numpy as np

    from img2text2img import api as i2t

    images = [Image.new(m, (20, 16)) for m in ("RGBA", "LA", "L", "P", "CMYK", "F", "1")]
    images += [Image.fromarray(np.full((16, 20), 40000, np.uint16)), Image.fromarray(np.zeros((16, 20), np.int32))]
    assert len(i2t.caption(images, model=models / "cap", beam_size=1)) == len(images)
    with pytest.raises(I2TError, match="too elongated"):
        i2t.caption([Image.new("L", (20000, 1))], model=models / "cap")
    with pytest.raises(I2TError, match="expected a PIL image"):
        i2t.caption([None], model=models / "cap")


def test_a_folder_run_lists_links_and_elongated_files_and_goes_on(models, tmp_path, capsys):
    import os

    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (30, 30), (200, 0, 0)).save(folder / "good.png")
    Image.new("L", (20000, 1)).save(folder / "strip.png")
    os.symlink(folder / "gone.jpg", folder / "dangling.jpg")
    assert main(["caption", str(folder), "--model", str(models / "cap"), "--beam", "1"]) == 2
    out = capsys.readouterr()
    assert "good.png" in out.out
    assert "dangling symbolic link" in out.err and "too elongated" in out.err
    assert out.err.strip().splitlines()[-1] == "error: 2 input(s) could not be captioned (listed above)"
