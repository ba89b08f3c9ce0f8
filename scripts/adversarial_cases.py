"""The cases of scripts/adversarial.py: tiny models, bad files, bad folders, bad options, damaged model folders,
targets that must survive, and simulated full disks. Each case is a callable returning an exit code, with what
must hold afterwards; the runner (scripts/adversarial.py) judges them."""
from __future__ import annotations

import io
import json
import os
import random
import shutil
import stat
import struct
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError

from img2text2img.errors import I2TError


@dataclass
class Case:
    name: str
    group: str
    run: Callable[[], int]
    bad: bool = True  # bad input: must be refused (non-zero exit, one error line)
    keep: tuple[Path, ...] = ()  # must be byte-identical afterwards
    check: Callable[[], str | None] | None = None  # a further promise; returns what is wrong, or None
    patches: tuple = ()  # (object, attribute, replacement) in place while the case runs


@dataclass
class Suite:
    root: Path
    cases: list[Case] = field(default_factory=list)

    def add(self, name: str, group: str, run: Callable[[], int], **kw) -> None:
        self.cases.append(Case(name, group, run, **kw))


def cli(*args) -> Callable[[], int]:
    def go() -> int:
        from img2text2img.cli import main

        return main([str(a) for a in args])
    return go


def api(fn: Callable[[], object]) -> Callable[[], int]:
    def go() -> int:
        try:
            fn()
        except I2TError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        return 0
    return go


# -- fixtures ---------------------------------------------------------------------------------------------------------


WORDS = ["a red circle on the left", "a blue square at the top", "a small green star"]


def build_models(d: Path) -> dict[str, Path]:
    from img2text2img.models.captioner import create_captioner
    from img2text2img.models.encoders import create_encoder
    from img2text2img.models.generator import create_generator
    from img2text2img.models.tagger import create_tagger
    from img2text2img.vocab import Vocabulary

    torch.manual_seed(0)
    vocab = Vocabulary.build(WORDS)
    enc = create_encoder("small_cnn", pretrained=False)
    cap = create_captioner("small_cnn+lstm-tiny", vocab, enc.num_features, store_encoder=True)
    cap.attach_encoder(enc)
    cap.save(d / "cap")
    cap.save(d / "cap2")
    for name in ("capf", "capf2"):  # decoders on cached features: what an ensemble combines
        create_captioner("small_cnn+lstm-tiny", vocab, enc.num_features).save(d / name)
    create_tagger("small_cnn+rnn-tiny", vocab).save(d / "tag")
    gen = create_generator("pixel-tiny", vocab)
    gen.save(d / "gen")
    gen.save(d / "run" / "best")
    (d / "run" / "summary.json").write_text(json.dumps({"command": "i2t train generator", "parents": []}))
    return {k: d / k for k in ("cap", "cap2", "capf", "capf2", "tag", "gen", "run")}


def png_claiming(w: int, h: int) -> bytes:
    """A tiny PNG whose header claims w x h pixels (the bytes of a decompression bomb, without its data)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    b = bytearray(buf.getvalue())
    ihdr = b[12:29]  # 'IHDR' + 13 bytes
    ihdr[4:12] = struct.pack(">II", w, h)
    b[12:29] = ihdr
    b[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    return bytes(b)


def encoded(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def bad_images(d: Path) -> dict[str, str]:
    """name -> what is wrong with it; every file here must be refused as that file's failure."""
    d.mkdir(parents=True, exist_ok=True)
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 48, 3), dtype=np.uint8))
    jpeg, png = encoded(rgb, "JPEG"), encoded(rgb, "PNG")
    files = {
        "strip_20000x1.png": (encoded(Image.new("L", (20000, 1)), "PNG"), "20000x1 strip"),
        "strip_100000x1.png": (encoded(Image.new("L", (100000, 1)), "PNG"), "100000x1 strip"),
        "strip_1x30000.png": (encoded(Image.new("RGB", (1, 30000)), "PNG"), "1x30000 strip"),
        "tall_32x2162720.tif": (encoded(Image.new("1", (32, 2_162_720)), "TIFF", compression="group4"),
                                "32 x 2,162,720 TIFF"),
        "bomb_20000x20000.png": (png_claiming(20000, 20000), "decompression bomb header"),
        "bomb_65535x65535.png": (png_claiming(65535, 65535), "largest PNG header"),
        "zero_dims.png": (png_claiming(0, 0), "0x0 header"),
        "empty.jpg": (b"", "zero bytes"),
        "text.jpg": (b"this is not a picture\n", "text named .jpg"),
        "trunc.jpg": (jpeg[:200], "truncated JPEG"),
        "trunc.png": (png[:120], "truncated PNG"),
        "header_only.gif": (b"GIF89a\x10\x00\x10\x00\x80\x00\x00", "GIF header only"),
        "random.png": (random.Random(1).randbytes(4000), "random bytes"),
        "png_sig_junk.png": (png[:8] + random.Random(2).randbytes(500), "PNG signature then junk"),
        "jpeg_sig_junk.jpg": (b"\xff\xd8\xff\xe0" + random.Random(3).randbytes(500), "JPEG marker then junk"),
        "tiff_sig_junk.tif": (b"II*\x00" + random.Random(4).randbytes(500), "TIFF magic then junk"),
        "webp_sig_junk.webp": (b"RIFF\x00\x01\x00\x00WEBPVP8 " + random.Random(5).randbytes(300), "WebP header, junk"),
        "bmp_sig_junk.bmp": (b"BM" + random.Random(6).randbytes(300), "BMP magic then junk"),
    }
    for name, (data, _) in files.items():
        (d / name).write_bytes(data)
    (d / "folder.jpg").mkdir(exist_ok=True)
    os.symlink(d / "nowhere.jpg", d / "dangling.jpg")
    os.symlink(d / "loop_b.jpg", d / "loop_a.jpg")
    os.symlink(d / "loop_a.jpg", d / "loop_b.jpg")
    os.mkfifo(d / "fifo.png")
    out = {k: v for k, (_, v) in files.items()}
    out.update({"folder.jpg": "a folder named .jpg", "dangling.jpg": "dangling symlink",
                "loop_a.jpg": "symlink loop", "fifo.png": "a named pipe"})
    return out


def fuzzed_images(d: Path, n: int, seed: int = 0) -> list[Path]:
    """Valid files of every format with random bytes flipped, cut or repeated (some still decode, most do not)."""
    d.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    base = Image.fromarray(np.random.default_rng(seed).integers(0, 255, (40, 56, 3), dtype=np.uint8))
    seeds = [encoded(base, f) for f in ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP")]
    seeds.append(encoded(base.convert("RGBA"), "PNG"))
    seeds.append(encoded(base.convert("I;16"), "PNG"))
    paths = []
    for i in range(n):
        data = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 12)):
            op, at = rng.random(), rng.randrange(len(data))
            if op < 0.6:
                data[at] = rng.randrange(256)
            elif op < 0.8:
                del data[at:at + rng.randint(1, 64)]
            else:
                data[at:at] = data[at:at + rng.randint(1, 64)] * rng.randint(1, 4)
        p = d / f"fuzz{i:03d}.png"
        p.write_bytes(bytes(data))
        paths.append(p)
    return paths


def damaged_model(src: Path, dst: Path, edit: Callable[[Path], None]) -> Path:
    shutil.copytree(src, dst)
    edit(dst)
    return dst


def edit_config(fn: Callable[[dict], None], raw: str | bytes | None = None) -> Callable[[Path], None]:
    def go(p: Path) -> None:
        if raw is not None:
            (p / "config.json").write_bytes(raw if isinstance(raw, bytes) else raw.encode())
            return
        meta = json.loads((p / "config.json").read_text())
        fn(meta)
        (p / "config.json").write_text(json.dumps(meta))
    return go


def resign(p: Path) -> None:
    """Make config.json's weights fingerprint match whatever model.safetensors now holds (an attacker would)."""
    from img2text2img.io import sha256_file

    meta = json.loads((p / "config.json").read_text())
    meta["weights_sha256"] = sha256_file(p / "model.safetensors")
    (p / "config.json").write_text(json.dumps(meta))


# -- the cases ----------------------------------------------------------------------------------------------------------


def add_image_cases(s: Suite, m: dict[str, Path]) -> None:
    from img2text2img import api as i2t

    bad = bad_images(s.root / "bad")
    good = s.root / "good.png"
    Image.new("RGB", (40, 30), (200, 40, 40)).save(good)
    for name, what in bad.items():
        s.add(f"image: caption {what} ({name})", "image", cli("caption", s.root / "bad" / name, "--model", m["cap"]))
    for name in ("strip_100000x1.png", "tall_32x2162720.tif", "loop_a.jpg", "random.png"):
        s.add(f"image: tag {name}", "image", cli("tag", s.root / "bad" / name, "--model", m["tag"]))
    folder = s.root / "mixed"
    folder.mkdir()
    shutil.copy(good, folder / "good.png")
    for name in ("strip_20000x1.png", "trunc.jpg", "text.jpg", "bomb_20000x20000.png"):
        shutil.copy(s.root / "bad" / name, folder / name)
    os.symlink(folder / "gone.png", folder / "dangling.png")

    s.add("folder: caption a folder of good and bad files goes on and exits 2", "folder",
          cli("caption", folder, "--model", m["cap"]))
    s.add("folder: tag a folder of good and bad files goes on and exits 2", "folder",
          cli("tag", folder, "--model", m["tag"]))
    s.add("folder: caption --json over good and bad files", "folder",
          cli("caption", folder, "--json", "--model", m["cap"]))
    fuzz = fuzzed_images(s.root / "fuzz", 40)
    shutil.copy(s.root / "bad" / "trunc.png", s.root / "fuzz" / "zz_known_bad.png")
    s.add("folder: caption 40 fuzzed files of every format (+1 known bad)", "folder",
          cli("caption", s.root / "fuzz", "--model", m["cap"]))
    s.add("folder: tag 40 fuzzed files (+1 known bad)", "folder", cli("tag", s.root / "fuzz", "--model", m["tag"]))
    s.add("folder: caption a missing path among good ones", "folder",
          cli("caption", good, s.root / "missing.jpg", "--model", m["cap"]))
    s.add("folder: caption an empty folder", "folder", cli("caption", s.root / "bad" / "folder.jpg",
                                                          "--model", m["cap"]))
    for i, p in enumerate(fuzz[:10]):  # each fuzzed file alone through the API: an image or one I2TError
        s.add(f"api: caption fuzzed file {p.name}", "api-image", api(lambda p=p: i2t.caption([p], model=m["cap"])),
              bad=None)

    # PIL images in every mode through the API: good input, must be captioned and tagged
    modes = ["RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F", "1", "YCbCr", "LAB", "HSV", "PA", "RGBX", "RGBa"]
    for mode in modes:
        img = Image.new("RGB", (32, 24), (90, 160, 30)).convert(mode) if mode not in ("I;16", "I", "F", "PA") else (
            Image.fromarray(np.full((24, 32), 40000, np.uint16)) if mode == "I;16" else
            Image.fromarray(np.full((24, 32), 40000, np.int32), "I") if mode == "I" else
            Image.fromarray(np.full((24, 32), 0.5, np.float32), "F") if mode == "F" else
            Image.new("P", (32, 24)).convert("PA"))
        s.add(f"api: caption a PIL image in mode {mode}", "api-mode",
              api(lambda img=img: i2t.caption([img], model=m["cap"])), bad=False)
        s.add(f"api: tag a PIL image in mode {mode}", "api-mode", api(lambda img=img: i2t.tag([img], model=m["tag"])),
              bad=False)

    def scaled_right() -> str | None:
        from img2text2img.data.images import to_rgb

        grey16 = to_rgb(Image.fromarray(np.full((4, 4), 65535, np.uint16))).getpixel((0, 0))
        dark16 = to_rgb(Image.fromarray(np.full((4, 4), 257, np.uint16))).getpixel((0, 0))
        half_f = to_rgb(Image.fromarray(np.full((4, 4), 0.5, np.float32), "F")).getpixel((0, 0))
        ok = grey16 == (255,) * 3 and dark16 == (1,) * 3 and abs(half_f[0] - 128) <= 1
        return None if ok else f"mis-scaled: 65535->{grey16}, 257->{dark16}, 0.5f->{half_f}"
    s.add("api: 16-bit and float images scaled by their value range", "api-mode", api(lambda: None), bad=False,
          check=scaled_right)
    s.add("api: caption a 20000x1 PIL image", "api-image",
          api(lambda: i2t.caption([Image.new("L", (20000, 1))], model=m["cap"])))
    s.add("api: caption None", "api-image", api(lambda: i2t.caption([None], model=m["cap"])))
    s.add("api: caption a numpy array", "api-image", api(lambda: i2t.caption([np.zeros((4, 4, 3))], model=m["cap"])))
    s.add("api: tag a missing path", "api-image", api(lambda: i2t.tag([s.root / "nope.png"], model=m["tag"])))


def add_option_cases(s: Suite, m: dict[str, Path]) -> None:
    img = s.root / "good.png"
    out = s.root / "opts"
    gen_train = ["train", "generator", "--kind", "pixel-tiny", "--data", "shapes:40", "--data-dir", s.root / "shapes",
                 "--steps", "2", "--batch-size", "8", "--threads", "1", "--device", "cpu"]
    cap_train = ["train", "captioner", "--model", "small_cnn+lstm-tiny", "--data", "shapes:40", "--data-dir",
                 s.root / "shapes", "--max-steps", "2", "--batch-size", "8", "--threads", "1", "--device", "cpu",
                 "--min-count", "1"]
    tag_train = ["train", "tagger", "--model", "small_cnn+rnn-tiny", "--data", "shapes:40", "--data-dir",
                 s.root / "shapes", "--max-steps", "2", "--batch-size", "8", "--threads", "1", "--device", "cpu"]
    opts = [
        ("caption --beam 0", ["caption", img, "--model", m["cap"], "--beam", "0"]),
        ("caption --beam 1000", ["caption", img, "--model", m["cap"], "--beam", "1000"]),
        ("caption --device bogus", ["caption", img, "--model", m["cap"], "--device", "bogus"]),
        ("caption --device cuda:99", ["caption", img, "--model", m["cap"], "--device", "cuda:99"]),
        ("caption --device ''", ["caption", img, "--model", m["cap"], "--device", ""]),
        ("tag --top 0", ["tag", img, "--model", m["tag"], "--top", "0"]),
        ("tag --device bogus", ["tag", img, "--model", m["tag"], "--device", "bogus"]),
        ("generate --temperature inf", ["generate", "a red circle", "--model", m["gen"], "-o", out / "t.png",
                                        "--temperature", "inf"]),
        ("generate --temperature nan", ["generate", "a red circle", "--model", m["gen"], "-o", out / "t.png",
                                        "--temperature", "nan"]),
        ("generate --temperature -1", ["generate", "a red circle", "--model", m["gen"], "-o", out / "t.png",
                                       "--temperature", "-1"]),
        ("generate --guidance inf", ["generate", "a red circle", "--model", m["gen"], "-o", out / "g.png",
                                     "--guidance", "inf"]),
        ("generate --guidance nan", ["generate", "a red circle", "--model", m["gen"], "-o", out / "g.png",
                                     "--guidance", "nan"]),
        ("generate --guidance 1e30", ["generate", "a red circle", "--model", m["gen"], "-o", out / "g.png",
                                      "--guidance", "1e30"]),
        ("generate --seed 2**70", ["generate", "a red circle", "--model", m["gen"], "-o", out / "s.png",
                                   "--seed", str(2**70)]),
        ("generate --seed -1", ["generate", "a red circle", "--model", m["gen"], "-o", out / "s.png", "--seed", "-1"]),
        ("generate -n 0", ["generate", "a red circle", "--model", m["gen"], "-o", out / "n.png", "-n", "0"]),
        ("generate empty prompt", ["generate", "   ", "--model", m["gen"], "-o", out / "e.png"]),
        ("generate -o a .jpg", ["generate", "a red circle", "--model", m["gen"], "-o", out / "x.jpg"]),
        ("generate -o /dev/full/x.png", ["generate", "a red circle", "--model", m["gen"], "-o", "/dev/full/x.png"]),
        ("generate --model a captioner", ["generate", "a red circle", "--model", m["cap"], "-o", out / "k.png"]),
        ("train generator --lr nan", [*gen_train, "--out", out / "r1", "--lr", "nan"]),
        ("train generator --lr inf", [*gen_train, "--out", out / "r2", "--lr", "inf"]),
        ("train generator --lr -1", [*gen_train, "--out", out / "r3", "--lr", "-1"]),
        ("train generator --steps -5", [*gen_train, "--out", out / "r4", "--steps", "-5"]),
        ("train generator --steps 0", [*gen_train, "--out", out / "r5", "--steps", "0"]),
        ("train generator --seed 2**64", [*gen_train, "--out", out / "r6", "--seed", str(2**64)]),
        ("train generator --seed -3", [*gen_train, "--out", out / "r7", "--seed", "-3"]),
        ("train generator --batch-size 0", [*gen_train, "--out", out / "r8", "--batch-size", "0"]),
        ("train generator --device bogus", [*gen_train, "--out", out / "r9", "--device", "bogus"]),
        ("train generator --precision fp16", [*gen_train, "--out", out / "r10", "--precision", "fp16"]),
        ("train generator --kind nope", [*gen_train, "--out", out / "r11", "--kind", "nope"]),
        ("train generator --beta nan", [*gen_train, "--out", out / "r12", "--beta", "nan"]),
        ("train captioner --lr nan", [*cap_train, "--out", out / "c1", "--lr", "nan"]),
        ("train captioner --max-steps -5", [*cap_train, "--out", out / "c2", "--max-steps", "-5"]),
        ("train captioner --dropout 2", [*cap_train, "--out", out / "c3", "--dropout", "2"]),
        ("train captioner --label-smoothing inf", [*cap_train, "--out", out / "c4", "--label-smoothing", "inf"]),
        ("train captioner --seed 2**64", [*cap_train, "--out", out / "c5", "--seed", str(2**64)]),
        ("train captioner --device cuda:7", [*cap_train, "--out", out / "c6", "--device", "cuda:7"]),
        ("train tagger --lr inf", [*tag_train, "--out", out / "t1", "--lr", "inf"]),
        ("train tagger --seed -1", [*tag_train, "--out", out / "t2", "--seed", "-1"]),
        ("train tagger --aux-bce nan", [*tag_train, "--out", out / "t3", "--aux-bce", "nan"]),
        ("eval generator --size -5", ["eval", "generator", "--model", m["gen"], "--data", "shapes:40", "--data-dir",
                                      s.root / "shapes", "--size", "-5", "--n", "4"]),
        ("eval generator --n 1", ["eval", "generator", "--model", m["gen"], "--data", "shapes:40", "--n", "1"]),
        ("eval generator --temperature nan", ["eval", "generator", "--model", m["gen"], "--data", "shapes:40",
                                              "--data-dir", s.root / "shapes", "--temperature", "nan", "--n", "4"]),
        ("data shapes --n 0", ["data", "shapes", "--out", out / "sh1", "--n", "0"]),
        ("data shapes --size -5", ["data", "shapes", "--out", out / "sh2", "--size", "-5"]),
        ("data shapes --seed 2**70", ["data", "shapes", "--out", out / "sh3", "--n", "4", "--seed", str(2**70)]),
        ("data info of a missing folder", ["data", "info", s.root / "no-such-dataset"]),
        ("unknown command", ["frobnicate"]),
        ("unknown option", ["caption", img, "--model", m["cap"], "--bogus-option"]),
    ]
    for name, argv in opts:
        s.add(f"option: {name}", "option", cli(*argv))


def add_model_cases(s: Suite, m: dict[str, Path]) -> None:
    img = s.root / "good.png"
    d = s.root / "damaged"
    d.mkdir()
    deep = '{"format_version": 1, "kind": "captioner", "x": ' + "[" * 100000 + "]" * 100000 + "}"

    def cfg(key, value):
        return edit_config(lambda meta: meta["config"].__setitem__(key, value))

    edits: list[tuple[str, Path, Callable[[Path], None]]] = [
        ("config.json is not JSON", m["cap"], edit_config(None, "{not json")),
        ("config.json is a list", m["cap"], edit_config(None, "[1, 2, 3]")),
        ("config.json nested 100000 deep", m["cap"], edit_config(None, deep)),
        ("config.json not UTF-8", m["cap"], edit_config(None, b"\xff\xfe\x00junk")),
        ("format_version '1'", m["cap"], edit_config(lambda c: c.__setitem__("format_version", "1"))),
        ("kind 5", m["cap"], edit_config(lambda c: c.__setitem__("kind", 5))),
        ("kind 'bogus'", m["cap"], edit_config(lambda c: c.__setitem__("kind", "bogus"))),
        ("config a string", m["cap"], edit_config(lambda c: c.__setitem__("config", "hidden=5"))),
        ("inference a list", m["cap"], edit_config(lambda c: c.__setitem__("inference", [1]))),
        ("info a string", m["cap"], edit_config(lambda c: c.__setitem__("info", "x"))),
        ("hidden a string", m["cap"], cfg("hidden", "512")),
        ("hidden negative", m["cap"], cfg("hidden", -5)),
        ("hidden 10**9", m["cap"], cfg("hidden", 10**9)),
        ("hidden 1.5", m["cap"], cfg("hidden", 1.5)),
        ("hidden true", m["cap"], cfg("hidden", True)),
        ("hidden nested junk", m["cap"], cfg("hidden", {"a": [1, {"b": None}]})),
        ("embed_dim 0", m["cap"], cfg("embed_dim", 0)),
        ("max_len -1", m["cap"], cfg("max_len", -1)),
        ("dropout NaN", m["cap"], cfg("dropout", float("nan"))),
        ("dropout 5", m["cap"], cfg("dropout", 5)),
        ("decoder 'transformer'", m["cap"], cfg("decoder", "transformer")),
        ("decoder 42", m["cap"], cfg("decoder", 42)),
        ("encoder 'nope'", m["cap"], cfg("encoder", "nope")),
        ("members 0", m["cap"], cfg("members", 0)),
        ("member_overrides junk", m["cap"], cfg("member_overrides", [{"hidden": "x"}])),
        ("unknown key", m["cap"], cfg("wings", 2)),
        ("beam_size 10**6", m["cap"], edit_config(lambda c: c.__setitem__("inference", {"beam_size": 10**6}))),
        ("beam_size -1", m["cap"], edit_config(lambda c: c.__setitem__("inference", {"beam_size": -1}))),
        ("length_alpha inf", m["cap"], edit_config(lambda c: c.__setitem__("inference", {"length_alpha": 1e999}))),
        ("vocab_size wrong", m["cap"], cfg("vocab_size", 3)),
        ("weights truncated", m["cap"], lambda p: (p / "model.safetensors").write_bytes(
            (p / "model.safetensors").read_bytes()[:100])),
        ("weights random, re-signed", m["cap"], lambda p: ((p / "model.safetensors").write_bytes(
            random.Random(0).randbytes(5000)), resign(p))),
        ("weights of the tagger, re-signed", m["cap"], lambda p: (shutil.copy(m["tag"] / "model.safetensors",
                                                                              p / "model.safetensors"), resign(p))),
        ("weights header claims 1e12 bytes, re-signed", m["cap"], lambda p: ((p / "model.safetensors").write_bytes(
            struct.pack("<Q", 10**12) + b"{}"), resign(p))),
        ("vocab.json garbage", m["cap"], lambda p: (p / "vocab.json").write_text("]]")),
        ("vocab.json a list", m["cap"], lambda p: (p / "vocab.json").write_text("[1, 2]")),
        ("vocab.json missing", m["cap"], lambda p: (p / "vocab.json").unlink()),
        ("tagger: max_tags -3", m["tag"], cfg("max_tags", -3)),
        ("tagger: head 'nope'", m["tag"], cfg("head", "nope")),
        ("tagger: threshold nan", m["tag"], edit_config(lambda c: c.__setitem__("inference", {"threshold": 1e999}))),
        ("generator: image_size -64", m["gen"], cfg("image_size", -64)),
        ("generator: channels junk", m["gen"], cfg("channels", ["a", None])),
        ("generator: z_dim 10**8", m["gen"], cfg("z_dim", 10**8)),
        ("generator: guidance inf", m["gen"], edit_config(lambda c: c.__setitem__("inference", {"guidance": 1e999}))),
    ]
    for i, (name, src, edit) in enumerate(edits):
        folder = damaged_model(src, d / f"m{i:02d}", edit)
        kind = json.loads(src.joinpath("config.json").read_text())["kind"]
        argv = (["caption", img, "--model", folder] if kind == "captioner" else
                ["tag", img, "--model", folder] if kind == "tagger" else
                ["generate", "a red circle", "--model", folder, "-o", s.root / "opts" / f"m{i}.png"])
        s.add(f"model: {kind} with {name}", "model", cli(*argv))
    from img2text2img.models import load_model

    s.add("model: missing folder", "model", cli("caption", img, "--model", s.root / "no-model"))
    s.add("model: a file as --model", "model", cli("caption", img, "--model", img))
    (s.root / "empty-model").mkdir()
    s.add("model: an empty folder", "model", cli("caption", img, "--model", s.root / "empty-model"))
    os.symlink(s.root / "loopm", s.root / "loopm2")
    os.symlink(s.root / "loopm2", s.root / "loopm")
    s.add("model: a symlink loop", "model", cli("caption", img, "--model", s.root / "loopm"))
    s.add("model: a tagger as captioner", "model", cli("caption", img, "--model", m["tag"]))
    s.add("api: load_model of a damaged folder", "model", api(lambda: load_model(d / "m10")))


def add_output_cases(s: Suite, m: dict[str, Path]) -> None:
    """Data loss: every command writing a model or run folder refuses what is not its own kind."""
    o = s.root / "targets"
    o.mkdir()
    photos = o / "holiday"
    photos.mkdir()
    (photos / "beach.jpg").write_bytes(b"my photo")
    (o / "notes.txt").write_text("my notes")
    shutil.copytree(m["cap"], o / "model")
    shutil.copytree(m["cap"], o / "model_with_notes")
    (o / "model_with_notes" / "README.txt").write_text("mine")
    shutil.copytree(m["run"], o / "arun")
    cfg_only = o / "hf_model"
    cfg_only.mkdir()
    (cfg_only / "config.json").write_text('{"hidden_size": 768}')
    keep = (photos, o / "notes.txt", o / "model", o / "model_with_notes", o / "arun", cfg_only)
    pair = (m["cap"], m["cap2"])
    for verb in ("average", "ensemble"):
        for target, label in ((photos, "a photo folder"), (o / "notes.txt", "a file"), (o / "model", "a model"),
                              (o / "arun", "a run folder"), (cfg_only, "a foreign config.json folder")):
            s.add(f"output: {verb} --out {label}", "output", cli(verb, *pair, "--out", target), keep=keep)
            if label != "a model":
                s.add(f"output: {verb} --out {label} --force", "output", cli(verb, *pair, "--out", target, "--force"),
                      keep=keep)
        s.add(f"output: {verb} --force into a model holding the user's README", "output",
              cli(verb, *pair, "--out", o / "model_with_notes", "--force"), keep=keep)
    for target, label in ((photos, "a photo folder"), (o / "notes.txt", "a file"), (o / "model", "a model"),
                          (o / "arun", "a run folder")):
        s.add(f"output: ship --as {label}", "output", cli("ship", m["run"], "--as", target), keep=keep)
    s.add("output: ship --force --as a photo folder", "output", cli("ship", m["run"], "--as", photos, "--force"),
          keep=keep)
    s.add("output: ship --set bogus=1", "output", cli("ship", m["run"], "--as", o / "s1", "--set", "bogus=1"))
    s.add("output: ship --set guidance=abc", "output", cli("ship", m["run"], "--as", o / "s2", "--set", "guidance=abc"))
    s.add("output: ship --set guidance=inf", "output", cli("ship", m["run"], "--as", o / "s3", "--set", "guidance=inf"))
    s.add("output: ship --as a bad name", "output", cli("ship", m["run"], "--as", "no way!"))
    gen_train = ["train", "generator", "--kind", "pixel-tiny", "--data", "shapes:40", "--data-dir", s.root / "shapes",
                 "--steps", "2", "--batch-size", "8", "--threads", "1", "--device", "cpu"]
    for target, label in ((photos, "a photo folder"), (o / "notes.txt", "a file"), (o / "model", "a model folder"),
                          (o / "arun", "a run (no --force)")):
        s.add(f"output: train generator --out {label}", "output", cli(*gen_train, "--out", target), keep=keep)
    s.add("output: train generator --force --out a photo folder", "output",
          cli(*gen_train, "--out", photos, "--force"), keep=keep)
    small = ["--data", "shapes:40", "--data-dir", s.root / "shapes", "--max-steps", "1", "--batch-size", "8",
             "--threads", "1", "--device", "cpu", "--force"]
    for target, label in ((photos, "a photo folder"), (o / "model", "a model folder")):
        s.add(f"output: train captioner --force --out {label}", "output",
              cli("train", "captioner", "--model", "small_cnn+lstm-tiny", "--min-count", "1", *small, "--out", target),
              keep=keep)
        s.add(f"output: train tagger --force --out {label}", "output",
              cli("train", "tagger", "--model", "small_cnn+rnn-tiny", *small, "--out", target), keep=keep)
    s.add("output: data shapes --out a photo folder", "output", cli("data", "shapes", "--out", photos, "--n", "4"),
          keep=keep)
    s.add("output: data shapes --force --out a model", "output",
          cli("data", "shapes", "--out", o / "model", "--n", "4", "--force"), keep=keep)
    s.add("output: data shapes --out a file", "output", cli("data", "shapes", "--out", o / "notes.txt", "--n", "4"),
          keep=keep)
    full = s.root / "full"  # a /dev/full of our own: a writer that renamed over it would not replace the system's
    try:
        os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))
        os.mknod(full.with_name("full.png"), 0o666 | stat.S_IFCHR, os.makedev(1, 7))
    except OSError:
        return  # not root: no device node to write into
    s.add("output: eval generator --out a full device", "output",
          cli("eval", "generator", "--model", m["gen"], "--data", "shapes:40", "--data-dir", s.root / "shapes",
              "--n", "4", "--size", "32", "--encoder", "small_cnn", "--out", full),
          check=lambda: None if stat.S_ISCHR(os.stat(full).st_mode) else "the device node was replaced by a file")
    s.add("output: generate -o a full device", "output",
          cli("generate", "a red circle", "--model", m["gen"], "-o", full.with_name("full.png"), "--force"),
          check=lambda: None if stat.S_ISCHR(os.stat(full.with_name("full.png")).st_mode) else "device replaced")


def add_disk_cases(s: Suite, m: dict[str, Path]) -> None:
    """Full disks and failing writers: one line, the previous checkpoint intact, no temporary folder left."""
    import img2text2img.checkpoint as ck
    import img2text2img.io as io_mod

    o = s.root / "disk"
    o.mkdir()
    shutil.copytree(m["cap"], o / "avg")
    (o / ".avg.tmpABCD1234").mkdir()  # what a kill during an earlier save leaves
    (o / ".avg.tmpABCD1234" / "model.safetensors").write_bytes(b"half")

    def full(*a, **k):
        raise SafetensorError("Error while serializing: IoError(Os { code: 28, kind: StorageFull, "
                              "message: \"No space left on device\" })")

    def enospc(*a, **k):
        raise OSError(28, "No space left on device")

    def no_temp_left() -> str | None:
        left = [p.name for p in o.iterdir() if ".tmp" in p.name]
        return f"temporary folders left: {left}" if left else None

    s.add("disk: average --force with the weights writer failing (disk full)", "disk",
          cli("average", m["cap"], m["cap2"], "--out", o / "avg", "--force"), keep=(o / "avg",),
          patches=((ck, "save_file", full),), check=no_temp_left)
    s.add("disk: average --force with os.replace failing (ENOSPC)", "disk",
          cli("average", m["cap"], m["cap2"], "--out", o / "avg", "--force"), keep=(o / "avg",),
          patches=((io_mod.os, "replace", enospc),), check=no_temp_left)
    s.add("disk: ship with the weights writer failing", "disk", cli("ship", m["run"], "--as", o / "shipped"),
          patches=((ck, "save_file", full),), check=no_temp_left)
    s.add("disk: ensemble into a folder that cannot be made", "disk",
          cli("ensemble", m["capf"], m["capf2"], "--out", "/proc/i2t-ensemble"))
    s.add("disk: ensemble with the weights writer failing", "disk",
          cli("ensemble", m["capf"], m["capf2"], "--out", o / "ens"), patches=((ck, "save_file", full),),
          check=lambda: no_temp_left() or ("a half-written model was left" if (o / "ens").exists() else None))
    calls = {"n": 0}
    real_save = ck.save_file

    def fails_second(*a, **k):
        calls["n"] += 1
        if calls["n"] > 2:
            full()
        return real_save(*a, **k)

    run = o / "train"
    s.add("disk: training checkpoint write fails mid-run", "disk",
          cli("train", "generator", "--kind", "pixel-tiny", "--data", "shapes:40", "--data-dir", s.root / "shapes",
              "--steps", "6", "--checkpoint-every", "2", "--batch-size", "8", "--threads", "1", "--device", "cpu",
              "--out", run),
          patches=((ck, "save_file", fails_second),),
          check=lambda: None if (run / "last" / "config.json").exists() else "the earlier checkpoint is gone")

    def truncate_trainer(name: str) -> Callable[[], int]:
        def go() -> int:  # on a copy of the run the case above left, so each damage is tried alone
            copy = o / f"train-{name}"
            shutil.copytree(run, copy)
            f = copy / "last" / name
            if f.exists():
                f.write_bytes(f.read_bytes()[: max(1, f.stat().st_size // 3)])
            return cli("train", "generator", "--kind", "pixel-tiny", "--data", "shapes:40", "--data-dir",
                       s.root / "shapes", "--steps", "6", "--checkpoint-every", "2", "--batch-size", "8",
                       "--threads", "1", "--device", "cpu", "--out", copy, "--resume")()
        return go
    s.add("disk: --resume with a truncated trainer.json", "disk", truncate_trainer("trainer.json"))
    s.add("disk: --resume with a truncated trainer.safetensors", "disk", truncate_trainer("trainer.safetensors"))


def add_data_cases(s: Suite) -> None:
    """Datasets users assemble by hand (the readers' own checks)."""
    d = s.root / "dataset"
    (d / "images").mkdir(parents=True)
    Image.new("RGB", (32, 32)).save(d / "images" / "a.png")
    (d / "captions.tsv").write_bytes(b"image\tcaption_index\tcaption\na.png\tzero\ta cat\n")
    s.add("data: caption_index not a number", "data", cli("data", "info", d))
    d2 = s.root / "dataset2"
    shutil.copytree(d, d2)
    (d2 / "captions.tsv").write_bytes(b"image\tcaption_index\tcaption\na.png\t0\t\xff\xfe a cat\n")
    s.add("data: captions not UTF-8", "data", cli("data", "info", d2))
