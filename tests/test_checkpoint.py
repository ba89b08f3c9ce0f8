"""Checkpoint folders: round trip, atomic replacement, and one-line errors for every kind of damage."""
from __future__ import annotations

import json

import pytest
import torch

from img2text2img.checkpoint import flatten_state, load_checkpoint, read_metrics, save_checkpoint, unflatten_state
from img2text2img.errors import I2TError
from img2text2img.vocab import Vocabulary

VOCAB = Vocabulary.build(["a red circle", "a blue square"])


def _save(path, **kw):
    sd = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3), "n": torch.tensor(3)}
    return save_checkpoint(path, kind="toy", config={"dim": 3}, state_dict=sd, vocab=VOCAB, metrics={"bleu4": 0.5}, **kw)


def test_roundtrip(tmp_path):
    _save(tmp_path / "m")
    ck = load_checkpoint(tmp_path / "m", kind="toy")
    assert ck.kind == "toy" and ck.config == {"dim": 3} and ck.vocab == VOCAB and ck.metrics == {"bleu4": 0.5}
    assert torch.equal(ck.state_dict["w"], torch.arange(6, dtype=torch.float32).reshape(2, 3))
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "metrics.json", "model.safetensors", "vocab.json"]
    assert not [p for p in tmp_path.iterdir() if p.name != "m"]  # no temp leftovers


def test_read_metrics_without_the_weights(tmp_path):
    _save(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").write_bytes(b"damaged")  # not read: a corrupt file would fail loading
    assert read_metrics(tmp_path / "m") == {"bleu4": 0.5}
    (tmp_path / "m" / "metrics.json").write_text("{not json", encoding="utf-8")
    assert read_metrics(tmp_path / "m") == {}
    assert read_metrics(tmp_path / "absent") == {}


def test_half_precision_loads_as_float(tmp_path):
    _save(tmp_path / "m", half=True)
    assert load_checkpoint(tmp_path / "m").state_dict["w"].dtype == torch.float32


def test_overwrite_is_atomic_and_old_copy_is_recovered(tmp_path):
    _save(tmp_path / "m")
    _save(tmp_path / "m")
    assert load_checkpoint(tmp_path / "m").kind == "toy"
    # A kill between the two renames leaves only m.old: loading still finds it.
    (tmp_path / "m").rename(tmp_path / "m.old")
    assert load_checkpoint(tmp_path / "m").kind == "toy"


@pytest.mark.parametrize("damage,match", [
    (lambda p: (p / "model.safetensors").write_bytes((p / "model.safetensors").read_bytes()[:40]), "corrupt or truncated"),
    (lambda p: (p / "vocab.json").unlink(), "missing vocab.json"),
    (lambda p: (p / "config.json").write_text("{"), "not valid JSON"),
    (lambda p: (p / "config.json").write_text(json.dumps({**json.loads((p / "config.json").read_text()), "format_version": 99})), "format version 99"),
    (lambda p: Vocabulary.build(["other words entirely"]).save(p / "vocab.json"), "does not match"),
])
def test_damage_gives_one_line_error(tmp_path, damage, match):
    _save(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(I2TError, match=match) as e:
        load_checkpoint(tmp_path / "m")
    assert "\n" not in str(e.value)


def test_wrong_kind_and_missing_folder(tmp_path):
    _save(tmp_path / "m")
    with pytest.raises(I2TError, match="holds a toy model, not a captioner"):
        load_checkpoint(tmp_path / "m", kind="captioner")
    with pytest.raises(I2TError, match="not found"):
        load_checkpoint(tmp_path / "missing")


def test_trainer_state_flatten_roundtrip():
    opt = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))])
    opt.param_groups[0]["params"][0].grad = torch.ones(3)
    opt.step()
    state = {"opt": opt.state_dict(), "rng": [torch.get_rng_state()], "t": (1, 2.5, None, "x")}
    flat, skel = flatten_state(state)
    back = unflatten_state(flat, json.loads(json.dumps(skel)))
    assert back["t"] == (1, 2.5, None, "x")
    assert torch.equal(back["opt"]["state"][0]["exp_avg"], state["opt"]["state"][0]["exp_avg"])
    assert back["opt"]["param_groups"][0]["lr"] == state["opt"]["param_groups"][0]["lr"]


def test_written_folders_have_normal_permissions(tmp_path):
    import os

    _save(tmp_path / "m")
    mask = os.umask(0)
    os.umask(mask)
    assert (tmp_path / "m").stat().st_mode & 0o777 == 0o777 & ~mask
    assert (tmp_path / "m" / "config.json").stat().st_mode & 0o777 == 0o666 & ~mask
