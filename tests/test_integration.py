"""The diffusion generator and the torch-free runtime wired into the library and the CLI.

Diffusion: a tiny model trained by `i2t train diffusion` loads through `load_model`, draws with `i2t generate
--steps` and keeps its settings when shipped. Runtime: `i2t caption` / `tag` / `generate` take a model's onnx/ graphs
when they can (then without torch), give what the torch path gives, fall back or refuse in one line when they cannot,
and `i2t ship` never ships graphs of other weights. TSV output escapes file names.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from img2text2img import models
from img2text2img.cli import main
from img2text2img.data.shapes import render, scene
from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.diffusion import DiffusionGenerator
from img2text2img.runtime import has_runtime
from img2text2img.runtime.export import export_runtime

PROMPT = "a large red circle on the left"


@pytest.fixture
def cpu_only(monkeypatch):
    """`--device auto` means the CPU here, whatever this machine has (the runtime runs on the CPU only)."""
    monkeypatch.setattr(models, "may_have_cuda", lambda: False)


@pytest.fixture
def photos(tmp_path) -> Path:
    folder = tmp_path / "pics"
    folder.mkdir()
    for i in range(3):
        render(*scene(i, seed=5)[:2]).save(folder / f"{i}.png")
    return folder


def one_line_error(capsys, *words: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err
    return err


# -- diffusion ------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def diffusion_run(shapes, tmp_path_factory) -> Path:
    """A tiny diffusion run trained for a few steps by `i2t train diffusion` (2 autoencoder + 4 denoiser steps)."""
    ds, _, _ = shapes
    out = tmp_path_factory.mktemp("diffusion") / "run"
    rc = main(["train", "diffusion", "--data", str(ds.root), "--out", str(out), "--preset", "diffusion-tiny",
               "--ae-steps", "2", "--ae-batch-size", "4", "--perceptual-weight", "0", "--steps", "4",
               "--batch-size", "8", "--warmup-steps", "0", "--checkpoint-every", "2", "--device", "cpu",
               "--log-every", "100"])
    assert rc == 0
    return out


def test_train_diffusion_loads_as_a_diffusion_generator_and_draws_with_steps(diffusion_run, tmp_path, capsys):
    model = load_model(diffusion_run / "denoiser")  # a run folder: its best/ (or last/)
    assert isinstance(model, DiffusionGenerator) and not model.training
    summary = json.loads((diffusion_run / "denoiser" / "summary.json").read_text())
    assert summary["command"][:3] == ["i2t", "train", "diffusion"]
    png = tmp_path / "d.png"
    assert main(["generate", PROMPT, "--model", str(diffusion_run / "denoiser"), "--steps", "4", "-n", "2",
                 "--guidance", "2", "--temperature", "0.8", "-o", str(png)]) == 0
    assert Image.open(png).size == (2 * 32 + 3 * 2, 32 + 2 * 2)  # a 1x2 grid of 32x32 pictures, 2px gaps
    import img2text2img as i2t

    a = i2t.generate(PROMPT, model=model, steps=3, seed=1)[0]
    with torch.no_grad():
        want = model.generate([PROMPT], steps=3, seed=1)
    assert np.array_equal(np.asarray(a), (want[0].clamp(0, 1) * 255).round().byte().permute(1, 2, 0).numpy())
    assert model.settings.steps == 25  # the API changed a copy's steps, not the caller's model


def test_diffusion_run_ships_with_its_settings(diffusion_run, tmp_path, capsys):
    out = tmp_path / "shipped"
    assert main(["ship", str(diffusion_run / "denoiser"), "--as", str(out), "--set", "steps=3",
                 "--set", "guidance=1.5"]) == 0
    shipped = load_model(out)
    assert isinstance(shipped, DiffusionGenerator)
    assert (shipped.settings.steps, shipped.settings.guidance) == (3, 1.5)
    assert not (out / "onnx").exists()  # the run had no graphs: none are exported unasked
    assert main(["generate", PROMPT, "--model", str(out), "--backend", "onnx", "-o", str(tmp_path / "o.png")]) == 2
    one_line_error(capsys, "no exported runtime graphs", "export_runtime.py")
    assert main(["generate", PROMPT, "--model", str(out), "-o", str(tmp_path / "s.png")]) == 0


def test_steps_and_train_generator_kind_diffusion_are_one_line_errors(tmp_path, capsys):
    assert main(["generate", PROMPT, "--data", "shapes", "--steps", "4", "-o", str(tmp_path / "a.png")]) == 2
    one_line_error(capsys, "--steps", "diffusion", "scene")
    assert main(["generate", PROMPT, "--model", "flickr8k-vae", "--steps", "4", "-o", str(tmp_path / "a.png")]) == 2
    one_line_error(capsys, "vae")
    assert not (tmp_path / "a.png").exists()
    with pytest.raises(I2TError, match="diffusion"):
        import img2text2img as i2t

        i2t.generate(PROMPT, data="shapes", steps=4)
    assert main(["train", "generator", "--kind", "diffusion", "--out", str(tmp_path / "run")]) == 2
    one_line_error(capsys, "i2t train diffusion")
    assert not (tmp_path / "run").exists()


def test_train_diffusion_refuses_what_is_not_its_run(tmp_path, capsys):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    assert main(["train", "diffusion", "--data", "shapes:20", "--out", str(tmp_path / "home"), "--force"]) == 2
    one_line_error(capsys, "does not hold a diffusion run")
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"


# -- the runtime in the CLI -----------------------------------------------------------------------------------------


def test_shipped_shapes_models_have_graphs_and_the_scene_generator_has_none():
    root = Path(models.__file__).parent.parent / "pretrained"
    for folder in ("captioner", "captioner_shapes", "tagger", "tagger_shapes", "generator_flickr8k"):
        assert has_runtime(root / folder), folder
    assert not has_runtime(root / "generator")


def test_cli_runtime_and_torch_give_the_same_captions_tags_and_pictures(photos, tmp_path, capsys, cpu_only):
    def run(*args) -> str:
        assert main(list(args)) == 0
        return capsys.readouterr().out

    for cmd in (["caption", str(photos), "--data", "shapes", "--json"], ["tag", str(photos), "--data", "shapes"]):
        onnx, torch_ = run(*cmd, "--backend", "onnx"), run(*cmd, "--backend", "torch")
        if cmd[0] == "caption":
            onnx, torch_ = ([(r["file"], r["caption"], round(r["logprob"], 3)) for r in map(json.loads, o.splitlines())]
                            for o in (onnx, torch_))
        assert onnx == torch_ and onnx
    tag = ["tag", str(photos), "--data", "shapes"]
    assert run(*tag) == run(*tag, "--backend", "onnx")  # auto takes the graphs here
    pics = {}
    for backend in ("onnx", "torch"):
        png = tmp_path / f"{backend}.png"
        run("generate", "a dog on the grass", "two men", "-n", "2", "--model", "flickr8k-vae", "--backend", backend,
            "-o", str(png))
        pics[backend] = np.asarray(Image.open(png), dtype=np.int16)
    assert pics["onnx"].shape == pics["torch"].shape and np.abs(pics["onnx"] - pics["torch"]).max() <= 1


def test_runtime_path_imports_no_torch(photos, tmp_path):
    code = ("import sys; import img2text2img.models as m; m.may_have_cuda = lambda: False\n"
            "from img2text2img.cli import main\n"
            "rc = [main(['caption', sys.argv[1], '--data', 'shapes']), main(['tag', sys.argv[1], '--data', 'shapes']),"
            " main(['generate', 'a dog', '-o', sys.argv[2]])]\n"
            "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'torchvision', 'timm') or n in "
            "('img2text2img.checkpoint', 'img2text2img.train.engine', 'img2text2img.models.generator', "
            "'img2text2img.roundtrip'))\nprint(rc, bad)")
    r = subprocess.run([sys.executable, "-c", code, str(photos), str(tmp_path / "g.png")], capture_output=True,
                       text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == "[0, 0, 0] []"
    assert (tmp_path / "g.png").exists()


def test_backend_refusals_are_one_line(photos, tmp_path, capsys, cpu_only, monkeypatch):
    out = str(tmp_path / "x.png")
    assert main(["caption", str(photos), "--data", "shapes", "--backend", "jax"]) == 2
    one_line_error(capsys, "--backend 'jax'")
    assert main(["generate", "a red circle", "--data", "shapes", "--backend", "onnx", "-o", out]) == 2
    one_line_error(capsys, "no ONNX export")  # the scene generator stays on torch
    assert main(["generate", "a dog", "--backend", "onnx", "--rerank-with", "shapes-captioner", "-o", out]) == 2
    one_line_error(capsys, "--rerank-with needs torch")
    monkeypatch.setattr(models, "may_have_cuda", lambda: True)
    assert main(["tag", str(photos), "--data", "shapes", "--backend", "onnx"]) == 2
    one_line_error(capsys, "--device cpu")
    assert main(["tag", str(photos), "--data", "shapes", "--backend", "onnx", "--device", "cpu"]) == 0


def tiny_captioner(hidden: int = 16):
    from img2text2img.models.captioner import create_captioner
    from img2text2img.models.encoders import create_encoder
    from img2text2img.vocab import Vocabulary

    torch.manual_seed(0)
    vocab = Vocabulary.build(["a red circle on the left", "a blue square", "two green stars"])
    model = create_captioner("small_cnn+lstm-tiny", vocab, feature_dim=64, store_encoder=True, hidden=hidden)
    model.attach_encoder(create_encoder("small_cnn", pretrained=False))
    return model.eval()


def test_stale_graphs_fall_back_to_torch_and_ship_exports_them_again(photos, tmp_path, capsys, cpu_only):
    import shutil

    m = tmp_path / "m"
    tiny_captioner().save(m)
    export_runtime(m)
    kept = tmp_path / "kept"
    shutil.copytree(m / "onnx", kept)
    tiny_captioner(hidden=32).save(m)  # new weights; put the old graphs back beside them
    shutil.copytree(kept, m / "onnx")
    assert main(["caption", str(photos), "--model", str(m)]) == 0
    out = capsys.readouterr()
    assert "other weights" in out.err and "using torch" in out.err and len(out.out.splitlines()) == 3
    assert main(["caption", str(photos), "--model", str(m), "--backend", "onnx"]) == 2
    one_line_error(capsys, "other weights")

    # shipping a model whose folder has graphs writes graphs of the shipped (fp16) weights, with the new settings
    export_runtime(m, force=True)
    shipped = tmp_path / "shipped"
    assert main(["ship", str(m), "--as", str(shipped), "--set", "beam_size=2"]) == 0
    manifest = json.loads((shipped / "onnx" / "manifest.json").read_text())
    config = json.loads((shipped / "config.json").read_text())
    assert manifest["weights_sha256"] == config["weights_sha256"] and manifest["settings"]["beam_size"] == 2
    # over a shipped folder with graphs: refused without --force, fresh graphs with it
    assert main(["ship", str(m), "--as", str(shipped)]) == 2
    one_line_error(capsys, "--force")
    tiny_captioner(hidden=32).save(m, half=True)
    shutil.rmtree(m / "onnx", ignore_errors=True)  # no graphs in the source: the graphs of the folder replaced are made again
    assert main(["ship", str(m), "--as", str(shipped), "--force"]) == 0
    manifest = json.loads((shipped / "onnx" / "manifest.json").read_text())
    assert manifest["weights_sha256"] == json.loads((shipped / "config.json").read_text())["weights_sha256"]
    assert main(["caption", str(photos), "--model", str(shipped), "--backend", "onnx"]) == 0


# -- output ---------------------------------------------------------------------------------------------------------


def test_tsv_output_escapes_tabs_newlines_and_backslashes_in_file_names(tmp_path, capsys, cpu_only):
    folder = tmp_path / "odd"
    folder.mkdir()
    name = "a\tb\\c\nd.png"
    render(*scene(0, seed=1)[:2]).save(folder / name)
    for cmd in ("caption", "tag"):
        assert main([cmd, str(folder), "--data", "shapes"]) == 0
        lines = capsys.readouterr().out.splitlines()
        assert len(lines) == 1 and lines[0].count("\t") == 1
        assert lines[0].split("\t")[0] == str(folder) + "/a\\tb\\\\c\\nd.png"
    assert main(["caption", str(folder), "--data", "shapes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["file"] == str(folder / name)


def test_the_torch_free_grid_is_the_generator_grid():
    from img2text2img.models.generator.images import make_grid
    from img2text2img.runtime.generator import make_grid as runtime_grid

    pics = [render(*scene(i, seed=2)[:2]).resize((16, 16)) for i in range(5)]
    for ncol in (None, 2, 5):
        assert runtime_grid(pics, ncol).tobytes() == make_grid(pics, ncol).tobytes()
