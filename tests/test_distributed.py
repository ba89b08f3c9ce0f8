"""Two processes under torchrun (gloo on CPU) keep identical weights and match a one-process run with the same
global batch."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent


def _run(out: Path, nproc: int, steps: int = 12, batch: int = 32) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(HERE.parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           str(HERE / "ddp_worker.py"), str(out), str(steps), str(batch)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240, check=False)
    assert r.returncode == 0, r.stderr[-2000:]


def test_two_processes_match_one(tmp_path):
    _run(tmp_path / "two", 2)
    _run(tmp_path / "one", 1)
    r0, r1 = load_file(tmp_path / "two" / "rank0.safetensors"), load_file(tmp_path / "two" / "rank1.safetensors")
    single = load_file(tmp_path / "one" / "rank0.safetensors")
    for k in r0:
        torch.testing.assert_close(r0[k], r1[k], rtol=0, atol=0)  # DDP keeps ranks bit-identical
        torch.testing.assert_close(r0[k], single[k], rtol=1e-4, atol=1e-5)  # same global batch, same updates
    l2 = float((tmp_path / "two" / "loss.txt").read_text())
    l1 = float((tmp_path / "one" / "loss.txt").read_text())
    assert abs(l2 - l1) <= 1e-4 * max(1.0, abs(l1))
