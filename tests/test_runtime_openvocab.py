"""Open vocabulary on the torch-free runtime: the numpy detector and constrained search give what the torch ones give,
and captioning with it imports no torch."""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from img2text2img.models.captioner import create_captioner
from img2text2img.models.captioner.config import CaptionSettings
from img2text2img.models.captioner.openvocab import extend_vocabulary
from img2text2img.models.captioner.search import constrained_beam_search as torch_search
from img2text2img.openvocab import Detection
from img2text2img.openvocab.constraints import plan_redecode
from img2text2img.openvocab.scoring import NumpyDetector, adapter_keys, read_sources
from img2text2img.runtime.captioner import OPEN_VOCAB_DEFAULTS, SAY_ONCE_DEFAULT
from img2text2img.runtime.openvocab import constrained_beam_search, encoder_state_key, extend_logp
from img2text2img.tags import said_once
from img2text2img.vocab import Vocabulary

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "img2text2img" / "pretrained" / "captioner"
WORDS = ["a", "dog", "cat", "man", "ball", "runs", "on", "the", "grass", "red", "blue", "."]


def tiny(decoder: str, seed: int = 0):
    torch.manual_seed(seed)
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *WORDS])
    name = {"lstm": "small_cnn+lstm-tiny", "attention": "small_cnn+attention-tiny"}[decoder]
    return create_captioner(name, vocab, feature_dim=8).eval()


class NumpySteps:
    """A torch decoder behind the runtime's step interface (numpy in, log-probabilities out), so the numpy search
    can be compared with the torch one on tiny models without exporting graphs."""

    def __init__(self, decoder):
        self.decoder = decoder
        self.per_image = set(getattr(decoder, "per_image_state", ()))

    def init_state(self, pooled, grid):
        s = self.decoder.init_state(torch.from_numpy(pooled), None if grid is None else torch.from_numpy(grid))
        return {k: v.numpy() for k, v in s.items()}

    def step(self, state, prefix):
        logits, new = self.decoder.step({k: torch.from_numpy(v) for k, v in state.items()}, torch.from_numpy(prefix))
        return torch.log_softmax(logits.float(), -1).numpy(), {k: v.numpy() for k, v in new.items()}


def test_extended_logprobs_are_a_softmax_over_one_more_word():
    logits = torch.randn(3, 7)
    ext = torch.log_softmax(torch.cat([logits, logits[:, [2, 2, 5]]], 1), -1)
    got = extend_logp(torch.log_softmax(logits, -1).numpy(), np.array([2, 2, 5]))
    assert np.allclose(got, ext.numpy(), atol=1e-6)


@pytest.mark.parametrize("decoder", ["lstm", "attention"])
@torch.no_grad()
def test_numpy_constrained_search_matches_torch_with_a_new_word(decoder):
    m = tiny(decoder)
    ext, added = extend_vocabulary(m, ["kitten"], sources={"kitten": "cat"})
    k, s = m.vocab.stoi, added["kitten"]
    g = torch.Generator().manual_seed(3)
    grid = torch.randn(4, 4, 8, generator=g)
    pooled = grid.mean(1)
    grid_in = grid if m.config.uses_grid else None
    cons = [[[s]], [[k["ball"]], [k["red"], k["blue"]]], [[k["grass"], s]], []]
    once = np.array(said_once(ext.vocab.itos))  # the vocabulary and the added word, as the runtime builds it
    for beam, o in ((2, None), (3, None), (3, once)):
        ids, lp, met = torch_search(ext.decoder, pooled, grid_in, cons, beam, 8, 0.7, full_stop=k["."],
                                    once=None if o is None else torch.from_numpy(o))
        nids, nlp, nmet = constrained_beam_search(NumpySteps(m.decoder), pooled.numpy(),
                                                  None if grid_in is None else grid_in.numpy(), cons, beam, 8, 0.7,
                                                  full_stop=k["."], source=np.array([k["cat"]]), once=o)
        assert nmet.tolist() == met.tolist()
        for a, b in zip(ids.tolist(), nids):
            assert ext.vocab.decode_tokens(a) == ext.vocab.decode_tokens(b.tolist())
        assert np.allclose(nlp, lp.numpy(), atol=1e-4)


def test_plan_keeps_the_main_word_and_adds_it_once():
    stoi = {w: i for i, w in enumerate(["<pad>", "<start>", "<end>", "<unk>", "jeep", "truck"])}
    car = Detection("car", 0.9, frozenset({"car", "cars", "jeep", "jeeps"}))
    zebra = Detection("zebra", 0.9, frozenset({"zebra", "zebras"}))
    plan = plan_redecode({0: [car], 2: [car, zebra]}, stoi, {"car": "truck"}.get)
    assert plan.added == ("car",) and plan.source == (stoi["truck"],)
    assert plan.rows == (0, 2) and plan.constraints == (((4, 6),), ((4, 6),))  # zebra: no source, dropped


def test_open_vocab_defaults_are_the_caption_settings():
    s = CaptionSettings()
    assert {k: getattr(s, k) for k in OPEN_VOCAB_DEFAULTS} == OPEN_VOCAB_DEFAULTS
    assert {f.name for f in dataclasses.fields(CaptionSettings) if f.name.startswith("open_vocab")} == set(
        OPEN_VOCAB_DEFAULTS)
    assert {k: getattr(s, k) for k in SAY_ONCE_DEFAULT} == SAY_ONCE_DEFAULT


@torch.no_grad()
def test_numpy_detector_matches_torch_through_the_adapter():
    from img2text2img.models.captioner import load_captioner
    from img2text2img.openvocab import detector as torch_detector

    model = load_captioner(None)
    enc = model.ensure_encoder()
    key = torch_detector.encoder_state_key(enc)
    assert encoder_state_key(SHIPPED / "model.safetensors") == key
    assert adapter_keys()[json.loads((SHIPPED / "config.json").read_text())["weights_sha256"]] == key
    pooled = torch.rand(6, 1280, generator=torch.Generator().manual_seed(0)) * 3
    for det, adapter in ((torch_detector.word_detector("efficientnet_lite0"), None),
                         (torch_detector.detector_for_encoder(enc, True), torch_detector.adapter_path(enc))):
        ours = NumpyDetector("efficientnet_lite0", adapter)
        assert np.allclose(ours(pooled.numpy()), det(pooled).numpy(), atol=2e-5)
        # what the lexical classifiers read, so both backends add the same words
        assert np.allclose(ours.frozen_features(pooled.numpy()), det.frozen_features(pooled).numpy(), atol=1e-4)
        assert [[d.word for d in r] for r in ours.detect(pooled.numpy())] == \
               [[d.word for d in r] for r in det.detect(pooled)]
    assert read_sources(model.vocab.sha256) is not None  # the shipped captioner needs no GloVe to add a word


def flickr_photos(n: int):
    from img2text2img.data import load_dataset, load_image
    from img2text2img.errors import I2TError

    try:
        ds = load_dataset("flickr8k")
    except I2TError:
        pytest.skip("Flickr8k is not here")
    return [load_image(ds.image_path(x)) for x in ds.split("test")[:n]]


def test_shipped_captioner_runtime_and_torch_open_vocab_agree():
    from img2text2img.models.captioner import load_captioner
    from img2text2img.runtime.load import load_runtime

    photos = flickr_photos(20)
    torch.set_num_threads(1)
    model = load_captioner(None)
    rt = load_runtime(SHIPPED, threads=1)
    for threshold in (0.3, rt.open_vocab_threshold):  # 0.3: more photos decoded again under constraints
        model.settings.open_vocab_threshold = rt.open_vocab_threshold = threshold
        a = [r.text for r in model.caption_images(photos, open_vocab=True)]
        b = [r.text for r in rt.caption_images(photos, open_vocab=True)]
        assert a == b
    plain = [r.text for r in rt.caption_images(photos, open_vocab=False)]
    rt.open_vocab_threshold = 0.3
    assert sum(x != y for x, y in zip(plain, [r.text for r in rt.caption_images(photos, open_vocab=True)])) >= 2


def run_on_a_photo_without_torch(tmp_path, model: Path, body: str) -> str:
    """Run `body` in a fresh interpreter with `m` the runtime of `model` and `photo` a random picture; fails when
    torch, torchvision or timm got imported. Returns its stdout."""
    from PIL import Image

    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)).save(photo)
    code = ("import sys\nfrom img2text2img.runtime import load_runtime\nfrom img2text2img.data.images import load_image\n"
            f"m = load_runtime({str(model)!r})\nphoto = load_image({str(photo)!r})\n{body}\n"
            "bad = [n for n in ('torch', 'torchvision', 'timm') if n in sys.modules]\nassert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_runtime_open_vocab_imports_no_torch(tmp_path):
    out = run_on_a_photo_without_torch(tmp_path, SHIPPED, "m.open_vocab_threshold = 0.0\n"
                                       "r = m.caption_images([photo], open_vocab=True)[0]\n"
                                       "assert m.ov is not None\nprint(r.text)")
    assert out.strip()


TAGGER = ROOT / "img2text2img" / "pretrained" / "tagger"


def test_shipped_tagger_runtime_and_torch_open_vocab_agree():
    from img2text2img.models.tagger import load_tagger
    from img2text2img.runtime.load import load_runtime

    photos = flickr_photos(40)
    model = load_tagger(None)
    rt = load_runtime(TAGGER, threads=1)
    assert model.settings.open_vocab and rt.open_vocab  # the shipped tagger merges by default
    a, b = model.tag_images(photos), rt.tag_images(photos)
    assert [[t for t, _ in r] for r in a] == [[t for t, _ in r] for r in b]
    assert max(abs(x - y) for ra, rb in zip(a, b) for (_, x), (_, y) in zip(ra, rb)) < 1e-4
    words = [[t for t, _ in r] for r in rt.tag_images(photos, open_vocab=False)]
    assert words == [[t for t, _ in r] for r in model.tag_images(photos, open_vocab=False)]
    assert words != [[t for t, _ in r] for r in b]  # merging changes some photos


def test_runtime_open_vocab_tags_import_no_torch(tmp_path):
    run_on_a_photo_without_torch(tmp_path, TAGGER, "r = m.tag_images([photo], open_vocab=True)[0]\n"
                                 "assert m.detector is not None")


def test_cli_open_vocab_runs_on_the_runtime(tmp_path, capsys):
    from PIL import Image

    from img2text2img.cli import main

    img = tmp_path / "i.png"
    Image.new("RGB", (64, 48), "blue").save(img)
    assert main(["caption", str(img), "--open-vocab", "--backend", "onnx"]) == 0
    out = capsys.readouterr()
    assert out.out.strip() and "torch" not in out.err
