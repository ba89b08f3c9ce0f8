"""Bring your own data: every format `--data` reads, the seeded split, bad data, `i2t data inspect`, and a few
training steps of each trainer from the formats (tiny presets, 32x32 pictures in tmp)."""
from __future__ import annotations

import csv
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from img2text2img.cli import main
from img2text2img.data import DataWarning, load_dataset
from img2text2img.data.augment import AugmentConfig, augment, for_caption, parse_augment
from img2text2img.data.load import auto_split
from img2text2img.errors import I2TError

COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220), "green": (30, 200, 30), "yellow": (230, 220, 30)}
N = 20


def picture(colour: str, i: int) -> Image.Image:
    im = Image.new("RGB", (32, 32), (255, 255, 255))
    x = 4 + (i % 3) * 6
    im.paste(COLOURS[colour], (x, 8, x + 14, 22))
    return im


def items(n: int = N) -> list[tuple[str, list[str], list[str]]]:
    """(file name, two captions, tags) for n pictures."""
    out = []
    for i in range(n):
        c = list(COLOURS)[i % 4]
        out.append((f"p{i:02d}.png", [f"a {c} square", f"a {c} box on white"], [c, "square"]))
    return out


def write_pictures(folder: Path, n: int = N) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, (name, _, _) in enumerate(items(n)):
        picture(list(COLOURS)[i % 4], i).save(folder / name)


def split_of(i: int) -> str:
    return "train" if i < N - 4 else "validation" if i < N - 2 else "test"


def make_caption_folder(root: Path) -> Path:
    write_pictures(root / "images")
    lines = ["image\tcaption_index\tcaption"] + [f"{n}\t{k}\t{c}" for n, caps, _ in items() for k, c in enumerate(caps)]
    (root / "captions.tsv").write_text("\n".join(lines) + "\n")
    return root


def make_hf_jsonl(root: Path) -> Path:
    write_pictures(root)
    with open(root / "metadata.jsonl", "w") as f:
        for i, (n, caps, tags) in enumerate(items()):
            f.writelines(json.dumps({"file_name": n, "text": c, "split": split_of(i), "tags": tags}) + "\n"
                         for c in caps)
    return root


def make_hf_split_folders(root: Path) -> Path:
    for i, (n, caps, tags) in enumerate(items()):
        d = root / split_of(i)
        d.mkdir(parents=True, exist_ok=True)
        picture(list(COLOURS)[i % 4], i).save(d / n)
        new = not (d / "metadata.csv").exists()
        with open(d / "metadata.csv", "a", newline="") as f:
            w = csv.writer(f)
            if new:
                w.writerow(["file_name", "caption", "tags"])
            for c in caps:
                w.writerow([n, c, ", ".join(tags)])
    return root


def make_karpathy(root: Path) -> Path:
    write_pictures(root / "images")
    doc = {"dataset": "flickr8k", "images": [
        {"filename": n, "split": split_of(i).replace("validation", "val"), "sentences": [{"raw": c} for c in caps]}
        for i, (n, caps, _) in enumerate(items())]}
    (root / "dataset_flickr8k.json").write_text(json.dumps(doc, indent=1))
    return root / "dataset_flickr8k.json"


def make_coco(root: Path) -> Path:
    write_pictures(root / "val2014")
    (root / "annotations").mkdir(parents=True)
    imgs = [{"id": 100 + i, "file_name": n} for i, (n, _, _) in enumerate(items())]
    anns = [{"id": k, "image_id": 100 + i, "caption": c} for i, (n, caps, _) in enumerate(items())
            for k, c in enumerate(caps)]
    (root / "annotations" / "captions_val2014.json").write_text(json.dumps({"images": imgs, "annotations": anns}))
    return root / "annotations" / "captions_val2014.json"


def make_flickr_token(root: Path) -> Path:
    write_pictures(root / "Flicker8k_Dataset")
    text = root / "Flickr8k_text"
    text.mkdir(parents=True)
    (text / "Flickr8k.token.txt").write_text("".join(f"{n}#{k}\t{c}\n" for n, caps, _ in items()
                                                     for k, c in enumerate(caps)))
    for s, fname in (("train", "trainImages"), ("validation", "devImages"), ("test", "testImages")):
        names = [n for i, (n, _, _) in enumerate(items()) if split_of(i) == s]
        (text / f"Flickr_8k.{fname}.txt").write_text("\n".join(names) + "\n")
    return root


MAKERS = {"caption-folder": make_caption_folder, "hf-imagefolder": make_hf_jsonl, "hf-split-folders": make_hf_split_folders,
          "karpathy": make_karpathy, "coco": make_coco, "flickr8k-token": make_flickr_token}


def snapshot(folder: Path) -> dict:
    return {str(p): p.stat().st_mtime_ns for p in Path(folder).rglob("*")}


@pytest.mark.parametrize("kind", list(MAKERS))
def test_each_format_is_detected_and_read(tmp_path, kind):
    path = MAKERS[kind](tmp_path / "d")
    before = snapshot(tmp_path / "d")
    ds = load_dataset(path)
    assert ds.format == kind.replace("hf-split-folders", "hf-imagefolder")
    assert len(ds.images) == N and all(len(ds.captions[n]) == 2 for n in ds.images)
    assert all(ds.image_path(n).is_file() for n in ds.images)
    p01 = next(n for n in ds.images if n.endswith("p01.png"))  # "train/p01.png" in the split folders
    assert ds.captions[p01] == ["a blue square", "a blue box on white"]  # in caption-index order
    if kind in ("caption-folder", "coco"):  # no split in the data: seeded 80/10/10 by image
        assert {s: len(v) for s, v in ds.splits.items()} == {"train": 16, "val": 2, "test": 2}
        assert ds.split_origin.startswith("seeded") and "splits" in ds.provenance()
    else:
        assert {s: len(v) for s, v in ds.splits.items()} == {"train": 16, "val": 2, "test": 2}
        assert ds.split_origin == "given" and "splits" not in ds.provenance()
    if kind.startswith("hf"):
        assert ds.tags[next(n for n in ds.images if n.endswith("p00.png"))] == ["red", "square"]
    assert snapshot(tmp_path / "d") == before  # nothing written into the user's folder


def test_auto_split_is_seeded_disjoint_and_by_image():
    names = [f"{i}.png" for i in range(50)]
    a, b, c = auto_split(names, 0), auto_split(names, 0), auto_split(names, 1)
    assert a == b != c
    assert sorted(n for v in a.values() for n in v) == sorted(names) and [len(a[s]) for s in ("train", "val", "test")] == [40, 5, 5]
    assert [len(v) for v in auto_split(names[:3]).values()] == [1, 1, 1]


def test_image_dir_and_data_dir_point_a_json_at_its_images(tmp_path):
    path = make_karpathy(tmp_path / "k")
    (tmp_path / "k" / "images").rename(tmp_path / "elsewhere")
    with pytest.raises(I2TError, match="none of the 20 listed images"):
        load_dataset(path)
    assert len(load_dataset(path, image_dir=tmp_path / "elsewhere").images) == N
    assert len(load_dataset(path, tmp_path / "elsewhere").images) == N  # --data-dir of the commands


def test_missing_and_unreadable_images_are_reported_and_skipped(tmp_path):
    root = make_hf_jsonl(tmp_path / "d")
    (root / "p03.png").unlink()
    (root / "p05.png").write_bytes(b"not a png at all")
    with pytest.warns(DataWarning, match=r"2 of 20 listed images .*p03.png \(not found\).*p05.png"):
        ds = load_dataset(root)
    assert len(ds.images) == N - 2 and all("p03.png" not in v for v in ds.splits.values())
    assert set(ds.provenance()["skipped"]["first"]) == {"p03.png", "p05.png"}
    for p in root.glob("*.png"):
        p.unlink()
    with pytest.raises(I2TError, match="none of the 20 listed images can be read"):
        load_dataset(root)


def test_a_broken_image_moves_no_other_image_between_drawn_splits(tmp_path, capsys):
    root = make_caption_folder(tmp_path / "d")
    whole = load_dataset(root).splits
    (root / "images" / whole["val"][0]).unlink()
    assert main(["data", "info", str(root)]) == 0
    err = capsys.readouterr().err
    assert err.startswith("warning: ") and "1 of 20 listed images" in err and "warn(" not in err  # one line
    with pytest.warns(DataWarning):
        part = load_dataset(root).splits
    assert part == {s: [n for n in v if n != whole["val"][0]] for s, v in whole.items()}


@pytest.mark.parametrize("name,content,message", [
    ("metadata.jsonl", '{"file_name": "p00.png", "text": "a"}\n{"file_name": "p01.png", "text": \n',
     r"metadata.jsonl:2: malformed JSON"),
    ("metadata.csv", "image,text\np00.png,a red square\n", r"metadata.csv:\d+: no file_name column \(has: image, text\)"),
    ("metadata.csv", "file_name,label\np00.png,red\n", r"metadata.csv:\d+: needs a text or caption column"),
    ("metadata.jsonl", '{"file_name": "p00.png", "text": "a", "split": "holdout"}\n', r":1: unknown split 'holdout'"),
    ("captions.tsv", "image\tcaption_index\tcaption\np00.png\t0\ta red square\np00.png\tone\ta box\n",
     r"captions.tsv:3: caption index 'one' is not a whole number"),
    ("captions.tsv", "img\tcaption\n", r"captions.tsv:1: expected header"),
    ("dataset_x.json", '{"images": [\n  {"filename": "p00.png",\n', r"dataset_x.json:3: malformed JSON"),
    ("dataset_x.json", '{"images": [{"filename": "p00.png", "split": "train"}]}', r"images\[0\]: no sentences list"),
    ("captions_x.json", ('{"images": [{"id": 1, "file_name": "p00.png"}], "annotations": [{"image_id": 2, '
                         '"caption": "a"}]}'), r"annotations\[0\] names image_id 2"),
    ("Flickr8k.token.txt", "p00.png#0\ta red square\np00.png#x\ta box\n", r"token.txt:2: caption index 'x'"),
])
def test_malformed_data_is_one_line_error_naming_file_and_line(tmp_path, name, content, message):
    root = tmp_path / "d"
    write_pictures(root / ("images" if name == "captions.tsv" else ""), 2)
    (root / name).write_text(content)
    with pytest.raises(I2TError, match=message) as e:
        load_dataset(root / name if name.endswith(".json") else root)
    assert "\n" not in str(e.value)


def test_non_utf8_text_names_the_line(tmp_path):
    root = tmp_path / "d"
    write_pictures(root, 2)
    (root / "metadata.csv").write_bytes(b"file_name,text\np00.png,a red square\np01.png,caf\xe9 au lait\n")
    with pytest.raises(I2TError, match=r"metadata.csv:3: not UTF-8"):
        load_dataset(root)


def test_not_a_dataset_is_one_line_error(tmp_path):
    (tmp_path / "x").mkdir()
    with pytest.raises(I2TError, match="no caption dataset found"):
        load_dataset(tmp_path / "x")


def test_inspect_reports_format_splits_tags_vocabulary_and_bad_images(tmp_path, capsys):
    root = make_hf_jsonl(tmp_path / "d")
    (root / "p07.png").write_bytes(Path(root / "p08.png").read_bytes()[:60])  # truncated: header fine, pixels not
    (root / "p09.png").unlink()
    assert main(["data", "inspect", str(root), "--json", "--min-count", "2"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["format"] == "hf-imagefolder" and r["images_listed"] == N and r["images"] == N - 2
    assert r["missing"]["count"] == 1 and r["missing"]["first"][0][0] == "p09.png"
    assert r["unreadable"]["count"] == 1 and r["unreadable"]["first"][0][0] == "p07.png"
    assert r["captions_per_image"] == {"min": 2, "mean": 2.0, "max": 2}
    assert r["splits"] == {"train": 14, "val": 2, "test": 2} and r["split_origin"] == "given"
    assert r["distinct_tags"] == 5 and r["top_tags"][0] == ["square", N - 2]
    assert r["vocabulary_size"] == 9  # a, square, box, on, white and the 4 colours (each >= 2 times in train)
    assert main(["data", "inspect", str(root)]) == 0
    text = capsys.readouterr().out
    assert "hf-imagefolder" in text and "missing: 1 (p09.png: not found)" in text and "unreadable: 1" in text
    assert main(["data", "inspect", str(tmp_path / "nothing")]) == 2


# -- augmentation ----------------------------------------------------------------------------------------------------


def test_parse_augment_and_its_errors():
    cfg = parse_augment("flip,rot90,rotate,shear=5,zoom")
    assert cfg == AugmentConfig(rot90=True, hflip=True, rotation=15.0, shear=5.0, zoom=0.1)
    assert parse_augment(cfg.spec) == cfg and not parse_augment("").enabled and not parse_augment("none").enabled
    for bad, msg in (("flop", "unknown op 'flop'"), ("rotate=x", "not a number"), ("zoom=3", "at most 0.9"),
                     ("flip=2", "takes no strength")):
        with pytest.raises(I2TError, match=msg):
            parse_augment(bad)


def test_captions_naming_sides_are_not_mirrored():
    cfg = parse_augment("flip,rot90")
    assert for_caption(cfg, "a dog on the left of a man") == AugmentConfig()
    assert for_caption(cfg, "a dog jumping over a fence") == AugmentConfig(hflip=True)
    assert for_caption(cfg, "a red square") == cfg
    img = picture("red", 0)  # square off-centre to the left: a mirror moves it
    for seed in range(8):
        out, cap = augment(img, "a square on the left", for_caption(cfg, "a square on the left"),
                           __import__("random").Random(seed))
        assert np.array_equal(np.asarray(out), np.asarray(img)) and cap == "a square on the left"


# -- training from each format (a few steps each) -------------------------------------------------------------------


def test_generator_trains_from_an_hf_folder_with_augmentation(tmp_path):
    from img2text2img.train.engine import TrainConfig
    from img2text2img.train.generator import GeneratorRecipe, train_generator

    torch.set_num_threads(1)
    root = make_hf_split_folders(tmp_path / "d")
    recipe = GeneratorRecipe(kind="pixel-tiny", steps=3, batch_size=4, augment="flip,rotate,zoom")
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=3, batch_size=4, checkpoint_every=3, progress=False)
    summary = train_generator(recipe, str(root), cfg)
    assert summary["steps"] == 3 and summary["data"]["format"] == "hf-imagefolder"
    assert (tmp_path / "run" / "last" / "samples.png").exists()


@pytest.mark.parametrize("kind", ["coco", "flickr8k-token"])
def test_generator_trains_from_json_and_token_files(tmp_path, kind):
    from img2text2img.train.engine import TrainConfig
    from img2text2img.train.generator import GeneratorRecipe, train_generator
    from img2text2img.train.generator_data import sample_prompts

    torch.set_num_threads(1)
    path = MAKERS[kind](tmp_path / "d")
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=2, batch_size=4, checkpoint_every=2, progress=False)
    summary = train_generator(GeneratorRecipe(kind="pixel-tiny", steps=2, batch_size=4), str(path), cfg)
    assert summary["steps"] == 2
    if kind == "coco":  # drawn split recorded with the run
        assert len(summary["data"]["splits"]["train"]) == 16
    assert sample_prompts(str(path), load_dataset(path))[0].startswith("a ")  # its own sentences, not shapes'


@pytest.mark.parametrize("kind", ["hf-imagefolder", "flickr8k-token"])
def test_tagger_trains_from_tags_or_captions_with_augmentation(tmp_path, kind):
    from img2text2img.train.tagger import train_tagger
    from img2text2img.train.tagger_recipe import TaggerRecipe

    torch.set_num_threads(1)
    path = MAKERS[kind](tmp_path / "d")
    before = snapshot(tmp_path / "d")
    recipe = TaggerRecipe(max_steps=3, batch_size=4, eval_every=3, augment="flip,rot90,shear")
    summary = train_tagger(str(path), "small_cnn+rnn-tiny", recipe, out=tmp_path / "run", checkpoint_every=3,
                           progress=False)
    assert summary["steps"] == 3 and summary["from_images"] and summary["recipe"]["augment"] == "flip,rot90,shear"
    assert summary["data"]["format"] == kind and snapshot(tmp_path / "d") == before  # the data folder untouched


def test_tagger_trains_on_tags_alone(tmp_path):
    """Photos with tag lists and no captions (metadata.csv: file_name, tags) are a tagger's data set."""
    from img2text2img.train.tagger import train_tagger
    from img2text2img.train.tagger_recipe import TaggerRecipe

    torch.set_num_threads(1)
    root = tmp_path / "d"
    write_pictures(root)
    with open(root / "metadata.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file_name", "tags"])
        for n, _, tags in items():
            w.writerow([n, ",".join(tags)])
    ds = load_dataset(root)
    assert len(ds.images) == N and not ds.captions and ds.split_origin.startswith("seeded")
    summary = train_tagger(str(root), "small_cnn+rnn-tiny", TaggerRecipe(max_steps=2, batch_size=4, eval_every=2),
                           out=tmp_path / "run", checkpoint_every=2, progress=False)
    assert summary["steps"] == 2 and len(summary["data"]["splits"]["val"]) == 2


@pytest.mark.parametrize("kind", ["karpathy", "caption-folder"])
def test_captioner_trains_end_to_end_with_augmentation(tmp_path, kind):
    from img2text2img.train.captioner import CaptionerTask, train_captioner
    from img2text2img.train.captioner_recipe import CaptionerRecipe
    from img2text2img.train.engine import TrainConfig

    torch.set_num_threads(1)
    path = MAKERS[kind](tmp_path / "d")
    recipe = CaptionerRecipe(model="small_cnn+lstm-tiny", min_count=1, augment="flip,rotate", val_images=2)
    task = CaptionerTask(recipe, load_dataset(path))
    a, b = task.train_dataset()[0], task.train_dataset()[0]
    assert len(a) == 3 and torch.equal(a[2], b[2])  # seeded per (epoch, index)
    batch = task.collate([task.train_dataset()[i] for i in range(3)])
    assert batch["images"].shape[0] == 3 == batch["tokens"].shape[0]
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=2, batch_size=4, eval_every=2, progress=False, device="cpu")
    summary = train_captioner(recipe, cfg, str(path))
    assert summary["steps"] == 2 and summary["data"]["format"] == kind


def test_captioner_augmentation_needs_an_encoder_that_runs(tmp_path):
    from img2text2img.train.captioner import CaptionerTask
    from img2text2img.train.captioner_recipe import CaptionerRecipe

    ds = load_dataset(make_caption_folder(tmp_path / "d"))
    with pytest.raises(I2TError, match="--augment needs an encoder that runs on every batch"):
        CaptionerTask(CaptionerRecipe(model="small_cnn+lstm-tiny", min_count=1, augment="flip", group_images=True), ds)


def test_train_cli_takes_data_path_and_augment(tmp_path, capsys):
    root = make_hf_jsonl(tmp_path / "d")
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataWarning)
        rc = main(["train", "tagger", "--data", str(root), "--model", "small_cnn+rnn-tiny", "--out",
                   str(tmp_path / "run"), "--max-steps", "2", "--batch-size", "4", "--augment", "flip,zoom=0.2"])
    assert rc == 0, capsys.readouterr().err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["recipe"]["augment"] == "flip,zoom=0.2" and summary["data"]["split_origin"] == "given"
    rc = main(["train", "tagger", "--data", str(root), "--model", "small_cnn+rnn-tiny", "--out",
               str(tmp_path / "run2"), "--augment", "mirror"])
    assert rc == 2 and "unknown op 'mirror'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run2")
