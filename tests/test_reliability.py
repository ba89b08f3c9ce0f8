"""Training survives kill -9 and resumes to the same weights; checkpoint writes never leave a broken folder."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from img2text2img.checkpoint import load_checkpoint, save_checkpoint
from img2text2img.errors import I2TError
from img2text2img.train.engine import TrainConfig, TrainTask, fit
from img2text2img.vocab import Vocabulary

ARGS = ["train", "generator", "--kind", "pixel-tiny", "--data", "shapes:200", "--steps", "40", "--batch-size", "16",
        "--checkpoint-every", "10", "--seed", "0", "--threads", "1", "--device", "cpu"]


def _i2t(*args: str, **kw) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    code = "import sys; from img2text2img.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kw)


def _step(run: Path) -> int:
    try:
        return load_checkpoint(run / "last").info["step"]
    except (I2TError, OSError, KeyError):  # not written yet, or caught mid-swap
        return -1


@pytest.mark.slow
def test_kill9_then_resume_matches_uninterrupted(tmp_path):
    straight = _i2t(*ARGS, "--out", str(tmp_path / "a"))
    out, _ = straight.communicate(timeout=300)
    assert straight.returncode == 0, out[-2000:]

    victim = _i2t(*ARGS, "--out", str(tmp_path / "b"))
    deadline = time.time() + 300
    while _step(tmp_path / "b") < 20 and time.time() < deadline and victim.poll() is None:
        time.sleep(0.05)
    assert victim.poll() is None, "training ended before it could be killed"
    os.kill(victim.pid, signal.SIGKILL)
    victim.wait()
    killed_at = _step(tmp_path / "b")
    assert 20 <= killed_at < 40

    resumed = _i2t(*ARGS, "--out", str(tmp_path / "b"), "--resume")
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out[-2000:]
    a, b = load_checkpoint(tmp_path / "a" / "last"), load_checkpoint(tmp_path / "b" / "last")
    assert a.info["step"] == b.info["step"] == 40
    for k in a.state_dict:
        torch.testing.assert_close(a.state_dict[k], b.state_dict[k], rtol=0, atol=0)


def test_failure_while_writing_keeps_previous_checkpoint(tmp_path, monkeypatch):
    vocab = Vocabulary.build(["a b"])
    save_checkpoint(tmp_path / "m", kind="toy", config={}, state_dict={"w": torch.ones(2)}, vocab=vocab)
    import img2text2img.checkpoint as ck

    def dies(*a, **k):
        raise KeyboardInterrupt  # stands in for a kill in the middle of writing the weights

    monkeypatch.setattr(ck, "save_file", dies)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path / "m", kind="toy", config={}, state_dict={"w": torch.zeros(2)}, vocab=vocab)
    assert torch.equal(load_checkpoint(tmp_path / "m").state_dict["w"], torch.ones(2))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # the temp folder was cleaned up


# -- issue 42: a failing checkpoint write mid-run, damaged resume state, settings no run can use --------------------


class Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.config = {"dim": 4}
        self.lin = torch.nn.Linear(4, 1)


class TinyTask(TrainTask):
    """The smallest task: a linear fit to fixed data (the engine's behaviour is tested, not a model's)."""

    kind = "toy"

    def __init__(self):
        torch.manual_seed(0)
        self.model, self.vocab = Tiny(), Vocabulary.build(["toy"])
        self.data = torch.utils.data.TensorDataset(torch.randn(64, 4), torch.randn(64))

    def train_dataset(self):
        return self.data

    def loss(self, model, batch):
        return torch.nn.functional.mse_loss(model.lin(batch[0])[:, 0], batch[1]), {}

    def checkpoint_config(self):
        return {"dim": 4}


def _cfg(out, **kw):
    return TrainConfig(out=str(out), **{"max_steps": 6, "batch_size": 16, "checkpoint_every": 2, "progress": False,
                                        "device": "cpu", **kw})


def test_checkpoint_write_failing_mid_run_is_one_line_and_keeps_the_last_good_one(tmp_path, monkeypatch):
    import img2text2img.checkpoint as ck

    real, calls = ck.save_file, []

    def fills_up(*a, **k):
        calls.append(1)
        if len(calls) > 2:  # the first checkpoint (weights + trainer state) lands, then the disk is full
            from safetensors import SafetensorError

            raise SafetensorError('IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })')
        return real(*a, **k)

    monkeypatch.setattr(ck, "save_file", fills_up)
    with pytest.raises(I2TError, match="cannot write .*last: No space left on device"):
        fit(TinyTask(), _cfg(tmp_path / "run"))
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / "last").info["step"] == 2
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["last"]  # no temporary folder left
    fit(TinyTask(), _cfg(tmp_path / "run", resume=True))  # and it resumes from there
    assert load_checkpoint(tmp_path / "run" / "last").info["step"] == 6


def test_resume_from_damaged_trainer_state_is_one_line(tmp_path):
    fit(TinyTask(), _cfg(tmp_path / "run", max_steps=2))
    last = tmp_path / "run" / "last"
    (last / "trainer.json").write_text((last / "trainer.json").read_text()[:50])
    with pytest.raises(I2TError, match="--resume: the trainer state .* is damaged or truncated") as e:
        fit(TinyTask(), _cfg(tmp_path / "run", max_steps=4, resume=True))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("setting,match", [
    ({"lr": float("nan")}, "--lr nan: must be a finite number"),
    ({"lr": float("inf")}, "--lr inf"),
    ({"lr": -1.0}, "must not be negative"),
    ({"max_steps": -5}, "--max-steps -5: must be at least 1"),
    ({"max_steps": 0}, "--max-steps 0"),
    ({"epochs": 0}, "--epochs 0"),
    ({"batch_size": 0}, "--batch-size 0"),
    ({"seed": 2**64}, "at most 2\\*\\*63-1"),
    ({"seed": -1}, "--seed -1"),
    ({"grad_clip": float("nan")}, "--grad-clip nan"),
    ({"device": "bogus"}, "--device 'bogus': not a device name"),
    ({"device": ""}, "not a device name"),
    ({"device": "meta"}, "runs on auto, cpu, cuda"),
    ({"precision": "fp16"}, "precision must be one of"),
    ({"schedule": "linear"}, "cosine or constant"),
])
def test_train_settings_no_run_can_use_are_refused(tmp_path, setting, match):
    with pytest.raises(I2TError, match=match) as e:
        _cfg(tmp_path / "run", **setting)
    assert "\n" not in str(e.value)


def test_pick_device_names_what_is_missing():
    from img2text2img.train.engine import pick_device

    assert pick_device("cpu").type == "cpu"
    with pytest.raises(I2TError, match="cuda:99"):
        pick_device("cuda:99")
    with pytest.raises(I2TError, match="not a device name"):
        pick_device("gpu please")


def test_force_over_a_run_replaces_only_its_checkpoints(tmp_path):
    fit(TinyTask(), _cfg(tmp_path / "run", max_steps=2))
    (tmp_path / "run" / "notes.txt").write_text("mine")
    fit(TinyTask(), _cfg(tmp_path / "run", max_steps=4, force=True))
    assert (tmp_path / "run" / "notes.txt").read_text() == "mine"
    assert load_checkpoint(tmp_path / "run" / "last").info["step"] == 4
    shutil.rmtree(tmp_path / "run" / "best")
    (tmp_path / "run" / "best").mkdir()
    (tmp_path / "run" / "best" / "photo.jpg").write_bytes(b"mine")  # not a checkpoint: never swapped away
    with pytest.raises(I2TError, match="does not hold a training run"):
        fit(TinyTask(), _cfg(tmp_path / "run", force=True))
    assert (tmp_path / "run" / "best" / "photo.jpg").read_bytes() == b"mine"
