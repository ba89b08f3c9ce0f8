"""Shipping a model: one folder that says how it was made, with no path of the machine that made it."""
from __future__ import annotations

import json

import pytest
import torch

from img2text2img.cli import main
from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.generator import create_generator
from img2text2img.shipping import portable_command, ship, ship_run, with_settings
from img2text2img.vocab import Vocabulary


@pytest.fixture
def run(tmp_path):
    """A training-run folder as the trainers leave it: best/ and a summary naming the command and one parent."""
    vocab = Vocabulary.build(["a red circle", "a blue square on the left"], min_count=1)
    torch.manual_seed(0)
    parent = create_generator("vae-tiny", vocab)
    parent.save(tmp_path / "parent")
    model = create_generator("vae-tiny", vocab)
    run = tmp_path / "run"
    model.save(run / "best")
    cmd = f"i2t train generator --kind vae-tiny --out {run} --init-from={tmp_path / 'parent'}"
    (run / "summary.json").write_text(json.dumps({"command": cmd, "parents": [str(tmp_path / "parent")]}))
    return run


def test_shipped_folder_records_provenance_without_machine_paths(run, tmp_path):
    out = ship_run(run, tmp_path / "shipped", settings={"guidance": "1.0"})
    meta = json.loads((out / "config.json").read_text())
    info = meta["info"]
    assert info["command"] == "i2t train generator --kind vae-tiny --out run --init-from=parent"
    assert info["parents"][0]["name"] == "parent"
    assert info["parents"][0]["weights_sha256"] == json.loads((tmp_path / "parent/config.json").read_text())[
        "weights_sha256"]
    assert info["date"] and "git_commit" in info
    assert str(tmp_path) not in (out / "config.json").read_text()
    # fp16, drawing-only, and it draws as the run's model did
    a = load_model(run / "best").generate(["a red circle"], seed=3)
    b = load_model(out).generate(["a red circle"], seed=3)
    assert (a - b).abs().max() < 2e-2


def test_ship_refuses_to_replace_without_force_and_never_a_foreign_folder(run, tmp_path):
    out = ship_run(run, tmp_path / "shipped")
    with pytest.raises(I2TError, match="--force"):
        ship_run(run, out)
    ship_run(run, out, force=True)
    foreign = tmp_path / "photos"
    foreign.mkdir()
    (foreign / "holiday.jpg").write_bytes(b"not mine")
    with pytest.raises(I2TError, match="does not hold"):
        ship_run(run, foreign, force=True)
    assert (foreign / "holiday.jpg").read_bytes() == b"not mine"
    with pytest.raises(I2TError, match="is a file"):
        ship(load_model(run / "best"), foreign / "holiday.jpg", force=True)


def test_set_changes_an_inference_setting_and_refuses_unknown_ones(run):
    model = with_settings(load_model(run / "best"), {"temperature": "0.5"})
    assert model.settings.temperature == 0.5
    with pytest.raises(I2TError, match="no inference setting"):
        with_settings(model, {"beam_size": "5"})
    with pytest.raises(I2TError, match="expected a float"):
        with_settings(model, {"temperature": "hot"})


def test_i2t_ship_command(run, tmp_path, capsys):
    assert main(["ship", str(run), "--as", str(tmp_path / "m"), "--set", "temperature=0.7"]) == 0
    assert json.loads((tmp_path / "m/config.json").read_text())["inference"]["temperature"] == 0.7
    assert main(["ship", str(run), "--as", str(tmp_path / "m"), "--set", "temperature"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_portable_command_keeps_relative_paths_and_plain_options():
    assert portable_command(["i2t", "caption", "--beam", "5", "photos/a.jpg"]) == "i2t caption --beam 5 photos/a.jpg"
