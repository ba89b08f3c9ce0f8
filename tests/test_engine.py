"""The training engine: loss falls, checkpoints land in out/last and out/best, and resume is exact."""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import nn

from img2text2img.checkpoint import load_checkpoint
from img2text2img.errors import I2TError
from img2text2img.train.engine import TrainConfig, TrainTask, fit
from img2text2img.vocab import Vocabulary


@dataclass
class ToyConfig:
    dim: int = 8


class Toy(nn.Module):
    def __init__(self, config: ToyConfig, dropout: float = 0.2):
        super().__init__()
        self.config = config
        self.net = nn.Sequential(nn.Linear(config.dim, 32), nn.ReLU(), nn.Dropout(dropout), nn.Linear(32, 1))

    def forward(self, x):
        return self.net(x).squeeze(-1)


class ToyTask(TrainTask):
    kind = "toy"
    main_metric = "neg_mse"

    def __init__(self, seed: int = 0, dropout: float = 0.2):
        torch.manual_seed(seed)
        self.model = Toy(ToyConfig(), dropout)
        self.vocab = Vocabulary.build(["toy"])
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(256, 8, generator=g)
        self.y = self.x @ torch.randn(8, generator=g)

    def train_dataset(self):
        return torch.utils.data.TensorDataset(self.x, self.y)

    def loss(self, model, batch):
        x, y = batch
        return nn.functional.mse_loss(model(x), y), {}

    def evaluate(self, model):
        return {"neg_mse": -nn.functional.mse_loss(model(self.x), self.y).item()}


class Crashing(ToyTask):
    def __init__(self, at: int):
        super().__init__()
        self.at = at

    def training_step(self, batch, step, ctx):
        if step == self.at:
            raise KeyboardInterrupt
        return super().training_step(batch, step, ctx)


def _weights(path):
    return load_checkpoint(path).state_dict


def test_loss_falls_and_checkpoints(tmp_path):
    task = ToyTask()
    with torch.no_grad():
        before = -task.evaluate(task.model)["neg_mse"]
    res = fit(task, TrainConfig(out=str(tmp_path / "run"), epochs=6, batch_size=32, lr=1e-2, progress=False))
    assert res["steps"] == 6 * 8
    assert -res["val"]["neg_mse"] < before / 3
    assert (tmp_path / "run" / "last" / "trainer.json").exists()
    assert (tmp_path / "run" / "best" / "config.json").exists()
    assert not (tmp_path / "run" / "best" / "trainer.json").exists()


def test_resume_reaches_same_weights(tmp_path):
    straight = tmp_path / "straight"
    fit(ToyTask(), TrainConfig(out=str(straight), max_steps=20, batch_size=32, checkpoint_every=5, progress=False))
    # Interrupted run: dies at step 13 (mid-epoch; the last checkpoint is from step 10), then resumes to 20.
    part = tmp_path / "part"
    with pytest.raises(KeyboardInterrupt):
        fit(Crashing(at=13), TrainConfig(out=str(part), max_steps=20, batch_size=32, checkpoint_every=5, progress=False))
    assert load_checkpoint(part / "last").info["step"] == 10
    fit(ToyTask(seed=123), TrainConfig(out=str(part), max_steps=20, batch_size=32, checkpoint_every=5, progress=False,
                                       resume=True))
    a, b = _weights(straight / "last"), _weights(part / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_stop_at_then_resume_with_a_shorter_schedule_is_replayable(tmp_path):
    """stop_at cuts a run at a known step (checkpointed, no best/ yet); resuming it, here with a shorter total as
    the diffusion recipe does, gives the same weights each time it is replayed."""
    def replay(name, total_after):
        run = tmp_path / name
        res = fit(ToyTask(), TrainConfig(out=str(run), max_steps=20, batch_size=32, checkpoint_every=7, progress=False,
                                         stop_at=9, eval_every=100))
        assert res["steps"] == 9 and load_checkpoint(run / "last").info["step"] == 9
        assert not (run / "best" / "config.json").exists()
        fit(ToyTask(seed=5), TrainConfig(out=str(run), max_steps=total_after, batch_size=32, checkpoint_every=7,
                                         progress=False, resume=True, eval_every=100))
        assert (run / "best" / "config.json").exists()
        return _weights(run / "last")

    a, b, longer = replay("a", 14), replay("b", 14), replay("c", 20)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert any(not torch.equal(a[k], longer[k]) for k in a)


class Unscored(ToyTask):
    main_metric = None  # as the diffusion task: no validation score to choose a best checkpoint by


def test_resumed_run_without_validation_rewrites_best(tmp_path):
    """With nothing scored, best/ is the final weights; resuming to more steps must replace the old best/, which
    `i2t ship` prefers over last/ (it once shipped the pre-resume weights of a longer diffusion run)."""
    run = tmp_path / "run"
    fit(Unscored(), TrainConfig(out=str(run), max_steps=10, batch_size=32, progress=False))
    first = _weights(run / "best")
    fit(Unscored(), TrainConfig(out=str(run), max_steps=20, batch_size=32, progress=False, resume=True))
    best, last = _weights(run / "best"), _weights(run / "last")
    assert load_checkpoint(run / "best").info["step"] == 20
    assert any(not torch.equal(first[k], best[k]) for k in best)
    for k in best:
        torch.testing.assert_close(best[k], last[k], rtol=0, atol=0)


def test_precision_picks_the_autocast_dtype():
    from img2text2img.train.engine import autocast_dtype_for

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert autocast_dtype_for("auto", cpu) is None and autocast_dtype_for("fp32", cpu) is None
    assert autocast_dtype_for("auto", cuda) is torch.float16 and autocast_dtype_for("fp32", cuda) is None
    assert autocast_dtype_for("bf16", cpu) is torch.bfloat16
    with pytest.raises(I2TError, match="precision must be one of"):
        autocast_dtype_for("fp8", cpu)


def test_bf16_training_falls_and_resumes_exactly(tmp_path):
    """bf16 autocast on the CPU: the loss still falls, the weights stay fp32, and resume is still exact."""
    res = fit(ToyTask(), TrainConfig(out=str(tmp_path / "run"), epochs=6, batch_size=32, lr=1e-2, progress=False,
                                     precision="bf16"))
    with torch.no_grad():
        before = -ToyTask().evaluate(ToyTask().model)["neg_mse"]
    assert -res["val"]["neg_mse"] < before / 3
    assert all(t.dtype == torch.float32 for t in _weights(tmp_path / "run" / "last").values())
    straight, part = tmp_path / "straight", tmp_path / "part"
    kw = {"max_steps": 12, "batch_size": 32, "checkpoint_every": 5, "progress": False, "precision": "bf16"}
    fit(ToyTask(), TrainConfig(out=str(straight), **kw))
    with pytest.raises(KeyboardInterrupt):
        fit(Crashing(at=7), TrainConfig(out=str(part), **kw))
    fit(ToyTask(seed=123), TrainConfig(out=str(part), resume=True, **kw))
    a, b = _weights(straight / "last"), _weights(part / "last")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)


def test_resume_without_checkpoint_is_clear_error(tmp_path):
    with pytest.raises(I2TError, match="no checkpoint"):
        fit(ToyTask(), TrainConfig(out=str(tmp_path / "none"), max_steps=2, resume=True, progress=False))


def test_diverging_loss_is_a_clear_error(tmp_path):
    class Diverging(ToyTask):
        def loss(self, model, batch):
            x, _ = batch
            return (model(x) * float("nan")).mean(), {}

    with pytest.raises(I2TError, match="diverged at step 1"):
        fit(Diverging(), TrainConfig(out=str(tmp_path / "d"), max_steps=3, batch_size=32, progress=False))


def test_config_from_dict_refuses_unknown_keys():
    from img2text2img.config import config_from_dict

    assert config_from_dict(ToyConfig, {"dim": 4}).dim == 4
    with pytest.raises(I2TError, match="does not know the keys extra"):
        config_from_dict(ToyConfig, {"dim": 4, "extra": 1})


def test_new_run_refuses_existing_run_folder(tmp_path):
    from img2text2img.train.generator import train_generator

    cfg = TrainConfig(out=str(tmp_path / "g"), max_steps=2, batch_size=8, progress=False)
    train_generator("pixel-tiny", "shapes:40", cfg)
    with pytest.raises(I2TError, match="already holds a run"):
        train_generator("pixel-tiny", "shapes:40", cfg)


def test_length_grouped_batches_are_a_shuffled_permutation_of_similar_lengths():
    from torch.utils.data import DistributedSampler

    from img2text2img.train.engine import _LengthGroupedSampler

    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 23, (1000,), generator=g).tolist()
    inner = DistributedSampler(range(1000), num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)
    s = _LengthGroupedSampler(inner, lengths, batch=10, seed=0, group=20)
    s.set_epoch(1)
    order = list(s)
    assert sorted(order) == list(range(1000))  # nothing lost or repeated
    assert order == list(s)  # the order is a function of (seed, epoch): resuming replays it
    spread = [max(lengths[i] for i in order[k:k + 10]) - min(lengths[i] for i in order[k:k + 10])
              for k in range(0, 1000, 10)]
    assert sum(spread) / len(spread) <= 2  # random batches of 10 would span ~14
    first = [lengths[order[k]] for k in range(0, 1000, 10)][:20]
    assert first != sorted(first)  # batches are shuffled, not served shortest first
    s.set_epoch(2)
    assert list(s) != order
