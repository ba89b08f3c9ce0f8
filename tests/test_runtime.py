"""The torch-free runtime (img2text2img.runtime) gives what the torch models give: captions, tags and pictures.

Tiny random models of every decoder and head are exported to a temporary folder and run both ways; the shipped
Flickr8k captioner, tagger and VAE are checked the same way where Flickr8k and the encoder weights are present
(nothing is written into img2text2img/pretrained/). A subprocess checks that captioning imports no torch.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.captioner import create_captioner
from img2text2img.models.encoders import create_encoder, encoder_spec
from img2text2img.models.generator import create_generator
from img2text2img.models.tagger import create_tagger
from img2text2img.runtime import has_runtime, load_runtime, runtime_dir
from img2text2img.runtime.export import export_runtime
from img2text2img.runtime.generator import prompt_ids, torch_randn
from img2text2img.runtime.images import Prepare
from img2text2img.runtime.text import Words, tokenize
from img2text2img.vocab import Vocabulary
from img2text2img.vocab import tokenize as torch_tokenize

PRETRAINED = Path(__file__).resolve().parents[1] / "img2text2img" / "pretrained"
CAPTIONS = ["a red circle on the left", "a small blue square above a green triangle", "two big yellow stars",
            "a purple circle next to an orange square", "the green triangle is below the red star"]


@pytest.fixture(scope="module")
def vocab() -> Vocabulary:
    return Vocabulary.build(CAPTIONS)


def pictures(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    sizes = [(80, 70), (64, 64), (50, 90), (120, 64)]
    return [Image.fromarray(rng.integers(0, 256, (sizes[i % 4][1], sizes[i % 4][0], 3), dtype=np.uint8))
            for i in range(n)]


def peaked(decoders) -> None:
    # random decoders are near-uniform; sharper output layers make every word choice clear of float rounding
    with torch.no_grad():
        for d in decoders:
            d.out.weight.mul_(8.0)


def tiny_captioner(vocab, decoder: str, **extra):
    torch.manual_seed(0)
    model = create_captioner(f"small_cnn+{decoder}-tiny", vocab, feature_dim=64, store_encoder=True, **extra)
    model.attach_encoder(create_encoder("small_cnn", pretrained=False))
    peaked(getattr(model.decoder, "members", [model.decoder]))
    return model.eval()


# -- captioner ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("decoder,extra", [
    ("lstm", {}),
    ("blstm", {}),
    ("attention", {"attribute_words": 3}),
    ("attention", {"members": 2, "member_overrides": ({}, {"decoder": "lstm"})}),  # a mixed ensemble
])
def test_captions_match_torch(tmp_path, vocab, decoder, extra):
    model = tiny_captioner(vocab, decoder, **extra)
    model.settings.length_alpha = 0.7
    model.save(tmp_path / "m", half=True)
    manifest = export_runtime(tmp_path / "m")
    assert set(manifest["sizes"]) == {"encoder.onnx", "decoder_init.onnx", "decoder_step.onnx"}
    rt = load_runtime(tmp_path / "m", kind="captioner", threads=1)
    images = pictures(6)
    torch_model = load_model(tmp_path / "m")
    for beam in (1, 3):
        want = torch_model.caption_images(images, beam_size=beam, batch_size=4)
        got = rt.caption_images(images, beam_size=beam, batch_size=4)
        assert [g.text for g in got] == [w.text for w in want]
        assert np.allclose([g.logprob for g in got], [w.logprob for w in want], atol=1e-4)
    short = rt.caption_images(images[:3], beam_size=2, max_len=3)
    assert [r.text for r in short] == [r.text for r in torch_model.caption_images(images[:3], beam_size=2, max_len=3)]
    assert all(len(r.tokens) <= 4 for r in short)  # max_len words, or one more in place of <end> (as torch)


def test_half_storage_is_lossless_and_smaller(tmp_path, vocab):
    model = tiny_captioner(vocab, "attention")
    model.save(tmp_path / "m", half=True)
    half = export_runtime(tmp_path / "m")
    full = export_runtime(tmp_path / "m", tmp_path / "fp32", half=False)
    assert sum(half["sizes"].values()) < 0.7 * sum(full["sizes"].values())
    images = pictures(3)
    a = load_runtime(tmp_path / "m", threads=1).caption_images(images)
    b = load_runtime(tmp_path / "m", threads=1, graphs=tmp_path / "fp32").caption_images(images)
    assert [(r.text, r.logprob) for r in a] == [(r.text, r.logprob) for r in b]


def test_settings_changed_after_export_are_read(tmp_path, vocab):
    model = tiny_captioner(vocab, "lstm")
    model.settings.beam_size = 4
    model.save(tmp_path / "m")
    export_runtime(tmp_path / "m")
    assert load_runtime(tmp_path / "m").beam_size == 4
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    cfg["inference"]["beam_size"] = 2  # what `i2t ship --set beam_size=2` writes
    (tmp_path / "m" / "config.json").write_text(json.dumps(cfg))
    assert load_runtime(tmp_path / "m").beam_size == 2


def test_captioning_imports_no_torch(tmp_path, vocab):
    tiny_captioner(vocab, "attention").save(tmp_path / "m")
    export_runtime(tmp_path / "m")
    pictures(1)[0].save(tmp_path / "photo.png")
    code = ("import sys\nfrom img2text2img.runtime import load_runtime\nfrom img2text2img.data.images import load_image\n"
            f"m = load_runtime({str(tmp_path / 'm')!r})\nprint(m.caption_images([load_image({str(tmp_path / 'photo.png')!r})])[0].text)\n"
            "bad = [n for n in ('torch', 'torchvision', 'timm') if n in sys.modules]\nassert not bad, bad")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip()


# -- tagger and generator ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["small_cnn+rnn-tiny", "small_cnn+bce-tiny"])
def test_tags_match_torch(tmp_path, vocab, name):
    torch.manual_seed(1)
    tagger = create_tagger(name, vocab).eval()
    with torch.no_grad():
        (tagger.head.out if hasattr(tagger.head, "out") else tagger.head.linear).weight.mul_(8.0)
    tagger.settings.threshold = 0.3
    tagger.save(tmp_path / "t")
    export_runtime(tmp_path / "t")
    rt = load_runtime(tmp_path / "t", kind="tagger", threads=1)
    images = pictures(5)
    want = load_model(tmp_path / "t").tag_images(images, top=None)
    got = rt.tag_images(images, top=None)
    assert [[t for t, _ in r] for r in got] == [[t for t, _ in r] for r in want]
    assert any(got)
    assert np.allclose([s for r in got for _, s in r], [s for r in want for _, s in r], atol=1e-4)


@pytest.mark.parametrize("preset", ["vae-tiny", "pixel-tiny"])
def test_pictures_match_torch(tmp_path, vocab, preset):
    torch.manual_seed(2)
    gen = create_generator(preset, vocab).eval()
    gen.fit_sentence_mean(torch.tensor([vocab.encode(c) for c in CAPTIONS[:1]]))
    gen.save(tmp_path / "g", full=False)
    export_runtime(tmp_path / "g")
    rt = load_runtime(tmp_path / "g", kind="generator", threads=1)
    prompts = ["a red circle", "two yellow stars above a square"]
    torch_gen = load_model(tmp_path / "g")
    for kw in ({"n": 2, "seed": 3}, {"n": 1, "seed": 5, "temperature": 0.5, "guidance": 2.0}):
        want = torch_gen.generate(prompts, **kw).numpy()
        got = rt.generate(prompts, **kw)
        assert got.shape == want.shape
        assert np.abs(got - want).max() < 1 / 255
    assert rt.generate_pil(prompts[0])[0].size == (64, 64)


def test_scene_generator_stays_on_torch(tmp_path, vocab):
    create_generator("scene-tiny", vocab).save(tmp_path / "s")
    with pytest.raises(I2TError, match="stays on torch"):
        export_runtime(tmp_path / "s")
    assert not (tmp_path / "s" / "onnx").exists()


@pytest.mark.parametrize("shape", [(1,), (7,), (3, 5), (16,), (2, 20), (5, 32), (1, 8)])
@pytest.mark.parametrize("seed", [0, 123, 2**32 + 9])
def test_noise_is_torchs(shape, seed):
    want = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).numpy()
    assert np.abs(torch_randn(seed, shape) - want).max() < 1e-5


def test_prompts_read_as_the_torch_generator_reads_them(vocab):
    from img2text2img.models.generator import prepare_prompts

    texts = ["A red circle, on the LEFT!", "two stars", "dog's  bone_x"]
    with pytest.warns(UserWarning):
        got = prompt_ids(texts, Words(vocab.itos), 40)
    with pytest.warns(UserWarning):
        want = prepare_prompts(texts, vocab, 40).numpy()
    assert np.array_equal(got, want)
    with pytest.raises(I2TError, match="empty prompt"):
        prompt_ids([" "], Words(vocab.itos), 40)


# -- preprocessing, words, errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("encoder", ["small_cnn", "mobilenet_v2", "efficientnet_lite0"])
def test_preprocessing_matches_torchvision(encoder):
    pre = encoder_spec(encoder).preprocess
    prepare = Prepare(pre.to_dict())
    tf = pre.transform()
    for im in pictures(4, seed=3) + [Image.new("RGB", (300, 200), (10, 200, 30))]:
        assert np.abs(prepare(im) - tf(im).numpy()).max() < 1e-6


def test_tokenize_and_decode_match_vocab(vocab):
    for text in ["A dog's ball, and_a 'quoted' word!", "Über café naïve", "  ", "x-ray 2 dogs"]:
        assert tokenize(text) == torch_tokenize(text)
    words = Words(vocab.itos)
    ids = [1, 5, 3, 7, 0, 2, 9]
    assert words.decode_tokens(ids) == vocab.decode_tokens(ids)


def test_missing_and_stale_graphs_are_one_line_errors(tmp_path, vocab):
    model = tiny_captioner(vocab, "lstm")
    model.save(tmp_path / "m")
    assert not has_runtime(tmp_path / "m")
    with pytest.raises(I2TError, match="export_runtime.py"):
        runtime_dir(tmp_path / "m")
    with pytest.raises(I2TError, match="not found"):
        load_runtime(tmp_path / "nowhere")
    export_runtime(tmp_path / "m")
    assert has_runtime(tmp_path / "m")
    with pytest.raises(I2TError, match="--force"):
        export_runtime(tmp_path / "m")
    with pytest.raises(I2TError, match="not a tagger"):
        load_runtime(tmp_path / "m", kind="tagger")
    shutil.copytree(tmp_path / "m" / "onnx", tmp_path / "kept")
    tiny_captioner(vocab, "lstm", hidden=32).save(tmp_path / "m")  # new weights, graphs left from the old ones
    with pytest.raises(I2TError, match="other weights"):
        load_runtime(tmp_path / "m", graphs=tmp_path / "kept")


# -- the shipped models -------------------------------------------------------------------------------------------


def flickr8k_test_photos(n: int) -> list[Image.Image]:
    from img2text2img import locations
    from img2text2img.data import load_image

    try:
        root = locations.flickr8k_dir()
    except I2TError:
        pytest.skip("Flickr8k not present")
    split = root / "splits" / "test.txt"
    if not split.exists():
        pytest.skip("Flickr8k test split not present")
    names = split.read_text().split()[:n]
    return [load_image(root / "images" / x) for x in names]


@pytest.mark.slow
@pytest.mark.flickr8k
def test_shipped_captioner_parity(tmp_path):
    photos = flickr8k_test_photos(20)
    export_runtime(PRETRAINED / "captioner", tmp_path / "onnx")
    rt = load_runtime(PRETRAINED / "captioner", graphs=tmp_path / "onnx")
    assert (rt.beam_size, rt.length_alpha) == (5, 1.0)
    got = rt.caption_images(photos)
    with torch.inference_mode():
        want = load_model(PRETRAINED / "captioner").caption_images(photos)
    same = sum(g.text == w.text for g, w in zip(got, want))
    assert same >= 19, [(g.text, w.text) for g, w in zip(got, want) if g.text != w.text]


@pytest.mark.slow
@pytest.mark.flickr8k
def test_shipped_tagger_and_vae_parity(tmp_path):
    photos = flickr8k_test_photos(8)
    try:
        tagger = load_model(PRETRAINED / "tagger")
    except I2TError as e:
        pytest.skip(f"tagger encoder weights not here: {e}")
    export_runtime(PRETRAINED / "tagger", tmp_path / "tagger")
    got = load_runtime(PRETRAINED / "tagger", graphs=tmp_path / "tagger").tag_images(photos)
    want = tagger.tag_images(photos)
    assert [[t for t, _ in r] for r in got] == [[t for t, _ in r] for r in want]
    assert np.allclose([s for r in got for _, s in r], [s for r in want for _, s in r], atol=1e-4)
    export_runtime(PRETRAINED / "generator_flickr8k", tmp_path / "vae")
    rt = load_runtime(PRETRAINED / "generator_flickr8k", graphs=tmp_path / "vae")
    prompts = ["a dog biting a stick", "a man riding a bike on the beach"]
    want = load_model(PRETRAINED / "generator_flickr8k").generate(prompts, n=2, seed=0).numpy()
    assert np.abs(rt.generate(prompts, n=2, seed=0) - want).max() < 1 / 255


@pytest.mark.slow
@pytest.mark.flickr8k
def test_shipped_graphs_caption_the_test_split_as_torch_does():
    """The graphs users run (the ones shipped in the folder) against the torch model on all 1,000 test photos:
    >= 99% identical captions and the same COCO BLEU-4 and CIDEr-D to 3 decimals (#12)."""
    from img2text2img import locations
    from img2text2img.data import load_dataset, load_image
    from img2text2img.metrics.caption import coco_scores

    try:
        ds = load_dataset("flickr8k", data_dir=str(locations.flickr8k_dir()))
    except I2TError:
        pytest.skip("Flickr8k not present")
    names = ds.split("test")
    assert len(names) == 1000
    rt = load_runtime(PRETRAINED / "captioner")
    tm = load_model(PRETRAINED / "captioner")
    got, want = [], []
    for i in range(0, len(names), 100):
        images = [load_image(ds.image_path(x)) for x in names[i:i + 100]]
        got += [r.text for r in rt.caption_images(images)]
        with torch.inference_mode():
            want += [r.text for r in tm.caption_images(images)]
    same = sum(g == w for g, w in zip(got, want))
    assert same >= 990, [(g, w) for g, w in zip(got, want) if g != w][:10]
    refs = [ds.captions[x] for x in names]
    try:
        a, b = coco_scores(refs, got, meteor=False), coco_scores(refs, want, meteor=False)
    except I2TError as e:  # no Java / pycocoevalcap: the identical-caption count above still holds
        pytest.skip(str(e))
    for key in ("coco_bleu4", "coco_cider_d"):
        assert round(a[key], 3) == round(b[key], 3), (key, a[key], b[key])


BLOCK_TRAIN_EXTRA = '''
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"torch", "torchvision", "timm", "onnx", "nltk"}:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Block())
from img2text2img.cli import main
sys.exit(main(sys.argv[1:]))
'''


def test_base_install_captions_and_says_which_extra_the_rest_needs(tmp_path, vocab):
    """Without the `train` extra (torch, torchvision, timm, onnx, nltk blocked): a model with graphs captions; a
    command that needs torch exits 2 with one line naming the extra, and writes nothing."""
    tiny_captioner(vocab, "attention").save(tmp_path / "m")
    export_runtime(tmp_path / "m")
    pictures(1)[0].save(tmp_path / "photo.png")

    def i2t(*args):
        return subprocess.run([sys.executable, "-c", BLOCK_TRAIN_EXTRA, *args], capture_output=True, text=True,
                              check=False)

    ok = i2t("caption", str(tmp_path / "photo.png"), "--model", str(tmp_path / "m"))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip()
    bad = i2t("generate", "a red circle", "--data", "shapes", "-o", str(tmp_path / "x.png"))
    assert bad.returncode == 2
    assert bad.stderr.strip() == ("error: this needs torch, which the base install leaves out: "
                                  "pip install 'img2text2img[train]'")
    assert not (tmp_path / "x.png").exists()


def test_python_api_chooses_the_backend_as_the_cli_does(tmp_path, vocab, monkeypatch):
    """backend=None is torch when installed, else the graphs; "onnx" and "torch" agree; without torch a model that
    has no graphs (the shapes scene writer) is a one-line error naming the extra."""
    import img2text2img as i2t
    from img2text2img.models.captioner.model import CaptionResult as TorchResult
    from img2text2img.runtime import choose

    tiny_captioner(vocab, "attention").save(tmp_path / "m")
    export_runtime(tmp_path / "m")
    photo = pictures(1)[0]
    by_torch = i2t.caption([photo], model=tmp_path / "m")
    assert isinstance(by_torch[0], TorchResult)
    by_onnx = i2t.caption([photo], model=tmp_path / "m", backend="onnx")
    assert not isinstance(by_onnx[0], TorchResult)
    assert by_onnx[0].text == by_torch[0].text
    monkeypatch.setattr(choose, "torch_installed", lambda: False)
    assert not isinstance(i2t.caption([photo], model=tmp_path / "m")[0], TorchResult)
    with pytest.raises(I2TError, match=r"^the shipped shapes generator needs torch.*img2text2img\[train\]'$"):
        i2t.generate("a red circle", data="shapes")
    with pytest.raises(I2TError, match="backend='jax'"):
        i2t.caption([photo], model=tmp_path / "m", backend="jax")


def test_graphs_in_the_model_folder_store_shared_weights_once(tmp_path, vocab):
    """Exported into the model's own onnx/, a graph leaves the weights model.safetensors holds byte for byte in that
    file (the package would otherwise carry them twice) and gives the same captions; exported elsewhere it keeps
    them; without the safetensors file loading is a one-line error."""
    tiny_captioner(vocab, "attention").save(tmp_path / "m")
    inline = export_runtime(tmp_path / "m", tmp_path / "elsewhere")
    shared = export_runtime(tmp_path / "m")
    assert not inline.get("shared") and shared["shared"]
    assert sum(shared["sizes"].values()) < 0.5 * sum(inline["sizes"].values())
    photos = pictures(3)
    a = [r.text for r in load_runtime(tmp_path / "m").caption_images(photos)]
    b = [r.text for r in load_runtime(tmp_path / "m", graphs=tmp_path / "elsewhere").caption_images(photos)]
    assert a == b
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(I2TError, match="model.safetensors is missing"):
        load_runtime(tmp_path / "m").caption_images(photos)
