"""Training survives kill -9 and resumes to the same weights; checkpoint writes never leave a broken folder."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from img2text2img.checkpoint import load_checkpoint, save_checkpoint
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
    except Exception:
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
