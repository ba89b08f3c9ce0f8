"""Run by tests/test_distributed.py under torchrun: train a small task and dump this rank's weights."""
from __future__ import annotations

import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(__file__))


def main(out: str, steps: int, batch: int) -> None:
    from test_engine import ToyTask

    from img2text2img.train.engine import TrainConfig, fit

    torch.set_num_threads(1)
    task = ToyTask(dropout=0.0)
    res = fit(task, TrainConfig(out=os.path.join(out, "run"), max_steps=steps, batch_size=batch, lr=1e-2,
                                progress=False, checkpoint_every=10**9))
    rank = int(os.environ.get("RANK", "0"))
    save_file({k: v.contiguous() for k, v in task.model.state_dict().items()}, os.path.join(out, f"rank{rank}.safetensors"))
    if rank == 0:
        with open(os.path.join(out, "loss.txt"), "w") as f:
            f.write(str(-res["val"].get("neg_mse", float("nan"))))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
