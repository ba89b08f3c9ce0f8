"""The latent diffusion generator on the torch-free runtime: its three graphs and the numpy DDIM loop draw the torch
model's pictures for a seed, steps and guidance work there, drawing imports no torch, stale graphs are refused."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch

from img2text2img.cli import main
from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.diffusion import DiffusionGenerator, DiffusionSettings, diffusion_config
from img2text2img.models.diffusion.schedule import ddim_sample as torch_ddim
from img2text2img.runtime import load_runtime
from img2text2img.runtime.diffusion import RuntimeDiffusion, ddim_sample, torch_linspace
from img2text2img.runtime.export import export_runtime, exportable
from img2text2img.vocab import Vocabulary

CAPTIONS = ["a red circle on the left", "a blue square on the right", "two green triangles at the top",
            "a small yellow star in the middle"]
PROMPTS = ["a red circle on the left", "two blue square"]


def tiny(seed: int = 0, steps: int = 4, guidance: float = 3.0) -> DiffusionGenerator:
    """A random tiny generator whose UNet and latent scale are not the fresh zeros / ones, so every part matters."""
    vocab = Vocabulary.build(CAPTIONS)
    torch.manual_seed(seed)
    model = DiffusionGenerator(diffusion_config("diffusion-tiny", vocab_size=len(vocab)), vocab,
                               DiffusionSettings(steps=steps, guidance=guidance))
    with torch.no_grad():
        for p in model.ema.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        model.autoencoder.latent_mean.normal_(0, 0.3)
        model.autoencoder.latent_std.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(the torch model, its shipped fp16 folder with graphs): what `i2t ship` + export leave."""
    folder = tmp_path_factory.mktemp("diffusion") / "m"
    tiny().save(folder, full=False, half=True)
    export_runtime(folder)
    return load_model(folder).eval(), folder


@pytest.mark.parametrize("guidance", [1.0, 3.0])
@pytest.mark.parametrize("seed", [0, 7])
def test_pictures_match_torch(exported, seed, guidance):
    model, folder = exported
    rt = load_runtime(folder, kind="generator", threads=1)
    assert isinstance(rt, RuntimeDiffusion)
    want = model.generate(PROMPTS, n=2, seed=seed, steps=4, guidance=guidance).numpy()
    got = rt.generate(PROMPTS, n=2, seed=seed, steps=4, guidance=guidance)
    assert got.shape == want.shape == (4, 3, 32, 32)
    assert np.abs(got - want).max() < 1 / 255
    assert np.abs(want[0] - want[1]).max() > 1e-3  # the seed's rows differ: the noise reached the pictures


def test_settings_temperature_and_steps_follow_the_model(exported, tmp_path):
    model, folder = exported
    rt = load_runtime(folder, threads=1)
    assert (rt.steps, rt.guidance) == (4, 3.0)
    want = model.generate(PROMPTS[:1], n=2, seed=1, steps=2, temperature=0.7).numpy()
    assert np.abs(rt.generate(PROMPTS[:1], n=2, seed=1, steps=2, temperature=0.7) - want).max() < 1 / 255
    assert np.abs(rt.generate(PROMPTS[:1], seed=1, steps=2) - rt.generate(PROMPTS[:1], seed=1, steps=3)).max() > 1e-4
    copy = tmp_path / "m"
    shutil.copytree(folder, copy)
    meta = json.loads((copy / "config.json").read_text())
    meta["inference"] = {"steps": 2, "guidance": 1.5}  # what `i2t ship --set` changes after the export
    (copy / "config.json").write_text(json.dumps(meta))
    changed = load_runtime(copy, threads=1)
    assert (changed.steps, changed.guidance) == (2, 1.5)
    assert np.abs(changed.generate(PROMPTS[:1]) - rt.generate(PROMPTS[:1], steps=2, guidance=1.5)).max() == 0
    with pytest.raises(I2TError, match="steps"):
        rt.generate(PROMPTS, steps=0)
    with pytest.raises(I2TError, match="guidance"):
        rt.generate(PROMPTS, guidance=-1)


def test_ddim_loop_and_timesteps_are_torchs():
    for n in (2, 5, 26, 333, 1001):
        assert np.array_equal(torch_linspace(1.0, 0.0, n), torch.linspace(1.0, 0.0, n).numpy())
    z0 = np.random.default_rng(0).standard_normal((2, 4, 8, 8)).astype(np.float32)
    noise = np.random.default_rng(1).standard_normal(z0.shape).astype(np.float32)

    def v_of(z, t, lib):  # an arbitrary smooth predictor, the same in both libraries
        return lib.sin(z) * (1 - t.reshape(-1, 1, 1, 1)) + 0.3 * z

    want = torch_ddim(lambda z, t: v_of(z, t, torch), torch.from_numpy(noise), 6).numpy()
    assert np.abs(ddim_sample(lambda z, t: v_of(z, t, np), noise, 6) - want).max() < 1e-5


def test_cli_and_api_draw_on_the_runtime_with_steps(exported, tmp_path, monkeypatch):
    import img2text2img as i2t

    model, folder = exported
    monkeypatch.setenv("I2T_THREADS", "1")
    out = tmp_path / "x.png"
    assert main(["generate", PROMPTS[0], "--model", str(folder), "--backend", "onnx", "--steps", "2", "-n", "2",
                 "--guidance", "2", "-o", str(out)]) == 0
    assert out.exists()
    pics = i2t.generate(PROMPTS[0], model=str(folder), n=2, seed=0, steps=2, guidance=2.0, backend="onnx")
    want = (model.generate(PROMPTS[:1], n=2, seed=0, steps=2, guidance=2.0) * 255).round().byte()
    got = np.stack([np.asarray(p) for p in pics]).transpose(0, 3, 1, 2).astype(int)
    assert np.abs(got - want.numpy().astype(int)).max() <= 1


def test_drawing_imports_no_torch(exported, tmp_path):
    _, folder = exported
    code = ("import sys\nfrom img2text2img.runtime import load_runtime\n"
            f"g = load_runtime({str(folder)!r}, threads=1)\n"
            "pics = g.generate_pil(['a red circle'], n=2, steps=2)\nprint(len(pics), pics[0].size)\n"
            "bad = [n for n in ('torch', 'torchvision', 'timm') if n in sys.modules]\nassert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "2 (32, 32)"


def test_stale_graphs_are_refused(exported, tmp_path):
    _, folder = exported
    assert exportable(folder)
    with pytest.raises(I2TError, match="--force"):
        export_runtime(folder)
    stale = tmp_path / "m"
    tiny(seed=1).save(stale, full=False, half=True)  # other weights beside the first model's graphs
    with pytest.raises(I2TError, match="other weights"):
        load_runtime(stale, graphs=folder / "onnx")
    shutil.copytree(folder / "onnx", stale / "onnx")
    with pytest.raises(I2TError, match="other weights"):
        load_runtime(stale)
