"""Shipped models by name: one table says which folder each name is and which is the default per task and data set;
every model option and `load_model` take a name or a folder; photo-trained models are the defaults."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from PIL import Image

from img2text2img.cli import main
from img2text2img.errors import I2TError
from img2text2img.models import inference_device, load_model
from img2text2img.models.names import (
    ALIASES,
    DATA_SETS,
    SHIPPED_MODELS,
    data_key,
    default_model,
    model_rows,
    resolve_model,
    shipped_model,
)


def test_table_names_real_folders_of_their_kind_with_one_default_per_task_and_data():
    assert set(SHIPPED_MODELS) == {"flickr8k-captioner", "shapes-captioner", "flickr8k-tagger", "shapes-tagger",
                                   "flickr8k-diffusion", "flickr8k-vae", "flickr8k-gan", "shapes-scene"}
    for m in SHIPPED_MODELS.values():
        meta = json.loads((m.path / "config.json").read_text())
        assert meta["kind"] == m.kind, m.name
        assert m.data in DATA_SETS and m.quality(), m.name
    for kind in ("captioner", "tagger", "generator"):
        for data in DATA_SETS:
            defaults = [m for m in SHIPPED_MODELS.values() if m.kind == kind and m.data == data and m.default]
            assert len(defaults) == 1 and default_model(kind, data) is defaults[0]
    # real photos and sentences unless shapes are asked for
    assert default_model("generator").name == "flickr8k-diffusion"
    assert default_model("captioner").name == "flickr8k-captioner"
    assert default_model("tagger", "shapes:500").name == "shapes-tagger"


def test_old_folder_names_are_names_too():
    assert ALIASES["captioner_shapes"] == "shapes-captioner"
    assert shipped_model("generator_flickr8k").name == "flickr8k-vae"
    assert resolve_model("generator", "generator") == SHIPPED_MODELS["shapes-scene"].path


def test_load_model_by_name_equals_by_folder():
    by_name = load_model("shapes-captioner")
    by_folder = load_model(SHIPPED_MODELS["shapes-captioner"].path, kind="captioner")
    assert type(by_name).__name__ == "Captioner"
    assert all(torch.equal(a, b) for a, b in zip(by_name.state_dict().values(), by_folder.state_dict().values()))


def test_unknown_or_wrong_kind_names_are_one_line_errors(tmp_path):
    with pytest.raises(I2TError) as e:
        load_model("shapes-captionr", kind="captioner")
    msg = str(e.value)
    assert "\n" not in msg and "flickr8k-captioner" in msg and "shapes-captioner" in msg and "tagger" not in msg
    with pytest.raises(I2TError, match="shapes-tagger is a tagger, not a captioner"):
        load_model("shapes-tagger", kind="captioner")
    with pytest.raises(I2TError, match="model folder not found"):  # meant as a folder: says which one is missing
        load_model(str(tmp_path / "nothing"), kind="captioner")
    with pytest.raises(I2TError, match="--data must be one of"):
        data_key("coco")


def test_a_folder_the_user_has_wins_over_a_name(tmp_path, monkeypatch):
    (tmp_path / "shapes-captioner").mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve_model("shapes-captioner", "captioner") == tmp_path.joinpath("shapes-captioner").relative_to(tmp_path)


def test_cli_models_lists_every_name_with_size_and_json(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in SHIPPED_MODELS:
        assert name in out
    assert "MB" in out and "BLEU-4" in out
    assert main(["models", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["name"] for r in rows] == [r["name"] for r in model_rows()]
    assert all(r["size_bytes"] > 0 and r["task"] in ("caption", "tag", "generate") for r in rows)


def test_the_names_table_and_i2t_models_need_no_torch():
    code = ("import sys; from img2text2img.cli import main; main(['models']); "
            "import img2text2img.models.names; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_every_model_option_takes_a_name(tmp_path, capsys):
    img = tmp_path / "red.png"
    Image.new("RGB", (64, 64), (220, 20, 20)).save(img)
    assert main(["caption", str(img), "--model", "shapes-captioner", "--device", "cpu"]) == 0
    by_name = capsys.readouterr().out
    assert main(["caption", str(img), "--data", "shapes"]) == 0
    assert capsys.readouterr().out == by_name
    assert main(["tag", str(img), "--model", "tagger_shapes", "--top", "2"]) == 0  # the old folder name
    assert "\t" in capsys.readouterr().out
    assert main(["caption", str(img), "--model", "shapes-tagger"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "captioners: flickr8k-captioner" in err
    assert main(["generate", "a red circle", "--model", "shapes-scene", "--rerank-with", "shapes-captioner",
                 "--candidates", "2", "-o", str(tmp_path / "a.png")]) == 0
    assert main(["generate", "a red circle", "--data", "shapes", "--rerank-with", "shapes-captioner",
                 "--candidates", "2", "-o", str(tmp_path / "b.png")]) == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()


def test_generate_draws_a_sentence_about_the_world_with_the_photo_generator(tmp_path, capsys):
    """The issue's own example: no 'words the generator has never seen' from the shapes vocabulary."""
    assert main(["generate", "a dog biting a stick", "-o", str(tmp_path / "dog.png")]) == 0
    assert "never seen" not in capsys.readouterr().err
    import img2text2img as i2t

    shapes = i2t.generate("a red circle", data="shapes", seed=3)[0]
    assert shapes.tobytes() == i2t.generate("a red circle", model="shapes-scene", seed=3)[0].tobytes()
    assert i2t.generate("a red circle", seed=3)[0].tobytes() == \
        i2t.generate("a red circle", model="flickr8k-diffusion", seed=3)[0].tobytes()


def test_device_auto_is_cuda_when_there_is_one(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert inference_device("auto") == "cpu" and inference_device(None) == "cpu"
    with pytest.raises(I2TError, match="CUDA is not available"):
        inference_device("cuda")
    with pytest.raises(I2TError, match="use auto, cpu, cuda"):
        inference_device("gpu0")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert inference_device("auto") == "cuda"
