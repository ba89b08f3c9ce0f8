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


# -- issue 42: write errors are one line, nothing of the user's is lost, leftovers of a kill are cleaned up ----------


def _no_space(*a, **k):
    from safetensors import SafetensorError

    raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left '
                          'on device" })')


def test_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    import img2text2img.checkpoint as ck

    _save(tmp_path / "m")
    before = (tmp_path / "m" / "model.safetensors").read_bytes()
    monkeypatch.setattr(ck, "save_file", _no_space)
    with pytest.raises(I2TError, match=r"cannot write .*m: No space left on device$") as e:
        _save(tmp_path / "m")
    assert "\n" not in str(e.value) and "IoError" not in str(e.value)
    assert (tmp_path / "m" / "model.safetensors").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_os_error_while_swapping_names_the_target(tmp_path, monkeypatch):
    import img2text2img.io as io_mod

    _save(tmp_path / "m")

    def enospc(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io_mod.os, "replace", enospc)
    with pytest.raises(I2TError, match="No space left on device") as e:
        _save(tmp_path / "m")
    assert ".tmp" not in str(e.value)  # the target is named, not the temporary folder
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "m").kind == "toy"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_temp_folders_of_a_killed_save_go_on_the_next_save_and_nothing_else(tmp_path):
    _save(tmp_path / "m")
    (tmp_path / ".m.tmpab12CD_9").mkdir()  # mkdtemp's name: what a kill -9 during a save leaves
    (tmp_path / ".m.tmpab12CD_9" / "model.safetensors").write_bytes(b"half")
    (tmp_path / ".m.tmp_not_ours").mkdir()  # another name: not ours
    (tmp_path / ".m.tmpABCDEFGH.keep").write_text("a user's file")
    _save(tmp_path / "m")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.tmpABCDEFGH.keep", ".m.tmp_not_ours", "m"]


def test_a_users_folder_named_like_a_backup_is_never_deleted(tmp_path):
    _save(tmp_path / "m")
    (tmp_path / "m.old").mkdir()  # the user's own copy (the name older releases used during a swap)
    (tmp_path / "m.old" / "keep.txt").write_text("mine")
    _save(tmp_path / "m")
    assert (tmp_path / "m.old" / "keep.txt").read_text() == "mine"
    # an interrupted swap leaves the hidden backup only: loading finds it, the next save restores the name
    (tmp_path / "m").rename(tmp_path / ".m.old")
    assert load_checkpoint(tmp_path / "m").kind == "toy"
    _save(tmp_path / "m")
    assert not (tmp_path / ".m.old").exists() and load_checkpoint(tmp_path / "m").kind == "toy"


def test_atomic_write_into_a_device_writes_into_it(tmp_path):
    import os
    import stat

    from img2text2img.io import write_text_atomic

    dev = tmp_path / "null"
    try:
        os.mknod(dev, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # our own /dev/null
    except OSError:
        pytest.skip("cannot make a device node here (not root)")
    write_text_atomic(dev, "{}")
    assert stat.S_ISCHR(dev.stat().st_mode)  # renaming over it would have replaced the device with a file
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    with pytest.raises(I2TError, match="cannot write .*full: No space left on device"):
        write_text_atomic(full, "{}")
    assert stat.S_ISCHR(full.stat().st_mode)


@pytest.mark.parametrize("what,setup,match", [
    ("model", lambda p: (p / "holiday.jpg").write_bytes(b"x"), "does not hold a model"),
    ("model", lambda p: (p / "config.json").write_text('{"hidden_size": 768}'), "does not hold a model"),
    ("model", lambda p: (_save(p / "best"), (p / "summary.json").write_text("{}")), "it holds a training run"),
    ("model", lambda p: (_save(p), (p / "README.txt").write_text("mine")), "other files \\(README.txt\\)"),
    ("training run", lambda p: _save(p), "it holds a model, not a training run"),
    ("training run", lambda p: (_save(p / "last"), (p / "best").mkdir(), (p / "best" / "x.txt").write_text("x")),
     "does not hold a training run"),
])
def test_check_target_refuses_other_kinds_even_with_force(tmp_path, what, setup, match):
    from img2text2img.checkpoint import check_target

    p = tmp_path / "out"
    p.mkdir()
    setup(p)
    with pytest.raises(I2TError, match=match):
        check_target(p, force=True, what=what)


def test_check_target_replaces_its_own_kind_only_with_force(tmp_path):
    from img2text2img.checkpoint import check_target

    _save(tmp_path / "m")
    (tmp_path / "m" / "summary.json").write_text("{}")  # written by average/ensemble beside the model: ours
    with pytest.raises(I2TError, match="pass --force"):
        check_target(tmp_path / "m")
    check_target(tmp_path / "m", force=True)
    _save(tmp_path / "run" / "last")
    (tmp_path / "run" / "samples").mkdir()
    check_target(tmp_path / "run", force=True, what="training run")
    with pytest.raises(I2TError, match="is a file"):
        check_target(tmp_path / "m" / "config.json", force=True)


@pytest.mark.parametrize("damage,match", [
    (lambda p: (p / "trainer.json").write_text('{"__dict__": [['), "damaged or truncated"),
    (lambda p: (p / "trainer.safetensors").write_bytes((p / "trainer.safetensors").read_bytes()[:20]),
     "damaged or truncated"),
    (lambda p: (p / "trainer.json").write_text('{"__tensor__": "nope"}'), "damaged or truncated"),
    (lambda p: (p / "trainer.json").write_text("[1, 2]"), "not a trainer state"),
])
def test_damaged_trainer_state_is_one_line(tmp_path, damage, match):
    from img2text2img.checkpoint import load_trainer_state

    _save(tmp_path / "m", trainer_state={"optimizers": {"main": {"state": {}, "lr": torch.ones(2)}}})
    assert load_trainer_state(tmp_path / "m")["optimizers"]["main"]["lr"].shape == (2,)
    damage(tmp_path / "m")
    with pytest.raises(I2TError, match=match) as e:
        load_trainer_state(tmp_path / "m")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("damage,match", [
    (lambda p: (p / "config.json").write_text("[1, 2]"), "not a checkpoint's config"),
    (lambda p: (p / "config.json").write_bytes(b"\xff\xfe junk"), "not valid JSON"),
    (lambda p: (p / "config.json").write_text("[" * 100000 + "]" * 100000), "not valid JSON"),
    (lambda p: (p / "vocab.json").write_text("[1, 2]"), "not a valid vocab.json"),
    (lambda p: (p / "config.json").write_text(json.dumps({**json.loads((p / "config.json").read_text()),
                                                          "config": "hidden=5"})), "key 'config' must be"),
    (lambda p: (p / "config.json").write_text(json.dumps({**json.loads((p / "config.json").read_text()),
                                                          "kind": 5})), "key 'kind'"),
    (lambda p: (p / "config.json").write_text(json.dumps({**json.loads((p / "config.json").read_text()),
                                                          "format_version": "1"})), "version '1'"),
])
def test_malformed_metadata_is_one_line(tmp_path, damage, match):
    _save(tmp_path / "m")
    damage(tmp_path / "m")
    with pytest.raises(I2TError, match=match) as e:
        load_checkpoint(tmp_path / "m")
    assert "\n" not in str(e.value)
