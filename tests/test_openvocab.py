"""Open vocabulary (#13): the search never writes <unk>, constrained beam search puts the asked word in, the
ImageNet words table and detector, vocabulary extension (DCC) and the tag merge."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from img2text2img.models.captioner import beam_search, create_captioner, greedy_search, sample_search
from img2text2img.models.captioner.openvocab import extend_vocabulary, missing_detections, nearest_known
from img2text2img.models.captioner.search import constrained_beam_search, never_emit
from img2text2img.openvocab import Detection, fit_platt, load_word_table, plural_forms
from img2text2img.openvocab.tags import is_tag_word, merge_tags
from img2text2img.vocab import END_ID, PAD_ID, START_ID, UNK_ID, Vocabulary, WordVectors

WORDS = ["a", "dog", "cat", "man", "ball", "runs", "on", "the", "grass", "red", "blue"]


def tiny(decoder="lstm", unk_bias=0.0, seed=0):
    torch.manual_seed(seed)
    vocab = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *WORDS])
    name = {"lstm": "small_cnn+lstm-tiny", "attention": "small_cnn+attention-tiny"}[decoder]
    m = create_captioner(name, vocab, feature_dim=8).eval()
    if unk_bias:
        with torch.no_grad():
            m.decoder.out.bias[UNK_ID] += unk_bias  # a model that loves <unk>, as undertrained ones do
    return m


def feats(b=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    grid = torch.randn(b, 4, 8, generator=g)
    return grid.mean(1), grid


def test_never_emit_masks_specials_and_keeps_other_logprobs():
    logp = torch.log_softmax(torch.randn(2, 10), -1)
    out = never_emit(logp)
    assert torch.isinf(out[:, [PAD_ID, START_ID, UNK_ID]]).all()
    assert torch.equal(out[:, END_ID:UNK_ID], logp[:, END_ID:UNK_ID]) and torch.equal(out[:, 4:], logp[:, 4:])


@pytest.mark.parametrize("decoder", ["lstm", "attention"])
def test_no_search_emits_unk_even_when_the_model_prefers_it(decoder):
    m = tiny(decoder, unk_bias=20.0)
    pooled, grid = feats()
    grid = grid if decoder == "attention" else None
    with torch.no_grad():
        ids = [greedy_search(m.decoder, pooled, grid, 8)[0], beam_search(m.decoder, pooled, grid, 3, 8)[0],
               sample_search(m.decoder, pooled, grid, 2, 8, generator=torch.Generator().manual_seed(0))[0],
               constrained_beam_search(m.decoder, pooled, grid, [[[5]]] * 3, 3, 8)[0]]
    for t in ids:
        assert not (t == UNK_ID).any() and not (t == START_ID).any()


@pytest.mark.parametrize("decoder", ["lstm", "attention"])
def test_constrained_beam_search_includes_the_words(decoder):
    m = tiny(decoder)
    pooled, grid = feats()
    grid = grid if decoder == "attention" else None
    cat, ball, red = m.vocab.stoi["cat"], m.vocab.stoi["ball"], m.vocab.stoi["red"]
    cons = [[[cat]], [[ball], [red]], []]  # one, two, and no constraint
    with torch.no_grad():
        ids, lp, met = constrained_beam_search(m.decoder, pooled, grid, cons, 3, 10)
        plain, plain_lp = beam_search(m.decoder, pooled, grid, 3, 10)
    assert met.all()
    rows = [r.tolist() for r in ids]
    assert cat in rows[0] and ball in rows[1] and red in rows[1]
    # no constraint: the same search as a plain beam (same caption, same score)
    assert m.vocab.decode_tokens(rows[2]) == m.vocab.decode_tokens(plain[2].tolist())
    assert math.isclose(float(lp[2]), float(plain_lp[2]), rel_tol=1e-5)
    # the score is the caption's own log-probability (teacher-forced check)
    toks = torch.tensor([[START_ID, *[i for i in rows[0] if i != PAD_ID]]])
    end = toks[0].tolist().index(END_ID) + 1 if END_ID in toks[0].tolist() else toks.shape[1]
    with torch.no_grad():
        logits, _ = m.decoder(pooled[:1], None if grid is None else grid[:1], toks[:, :end])
    tf = torch.log_softmax(logits, -1).gather(2, toks[:, 1:end, None]).sum()
    assert math.isclose(float(tf), float(lp[0]), rel_tol=1e-4, abs_tol=1e-4)


def test_constrained_beam_search_alternatives_and_bad_input():
    m = tiny()
    pooled, _ = feats(1)
    dog, cat = m.vocab.stoi["dog"], m.vocab.stoi["cat"]
    with torch.no_grad():
        ids, _, met = constrained_beam_search(m.decoder, pooled, None, [[[dog, cat]]], 3, 10)
    assert met.all() and ({dog, cat} & set(ids[0].tolist()))
    with pytest.raises(ValueError):
        constrained_beam_search(m.decoder, pooled, None, [[[dog], [cat], [dog]]], 3, 10)
    with pytest.raises(ValueError):
        constrained_beam_search(m.decoder, pooled, None, [[[999]]], 3, 10)


def test_word_table_names_what_the_issue_asks():
    t = load_word_table()
    assert len(t.classes) == 1000
    assert t.words[t.classes[207][0]] == "dog" and t.words[t.classes[281][0]] == "cat"  # golden retriever, tabby
    assert t.words[t.classes[985][0]] == "flower"  # daisy
    assert {"coffee", "cup"} <= t.names(t.words[t.classes[967][0]])  # espresso
    assert t.words[t.classes[817][0]] == "car" and t.classes[726] == ()  # sports car; carpenter's plane: no word
    assert sum(1 for c in t.classes[151:269] if t.words[c[0]] == "dog") == 118
    assert t.is_animal("dog") and not t.is_animal("car")
    assert plural_forms("dog") == ("dog", "dogs") and plural_forms("bus")[1] == "buses"
    assert plural_forms("man")[1] == "men" and plural_forms("puppy")[1] == "puppies"


def test_platt_fit_recovers_a_known_calibration():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4000, generator=g) * 0.98 + 0.01
    truth = torch.sigmoid(2.0 * torch.logit(x) - 1.0)
    y = (torch.rand(4000, generator=g) < truth).float()
    a, b = fit_platt(x, y)
    assert abs(a - 2.0) < 0.3 and abs(b + 1.0) < 0.3


def test_missing_detections_skips_named_and_unsure_words():
    dets = [Detection("dog", 0.9, frozenset({"dog", "dogs"})), Detection("cat", 0.8, frozenset({"cat", "cats"})),
            Detection("cup", 0.3, frozenset({"cup"}))]
    assert [d.word for d in missing_detections(dets, ["two", "dogs"], 0.5)] == ["cat"]
    assert missing_detections(dets, ["a", "cat", "dog"], 0.5) == []


def test_missing_detections_put_words_the_captioner_never_learnt_first():
    dets = [Detection("dog", 0.9, frozenset({"dog", "dogs"})), Detection("zebra", 0.6, frozenset({"zebra"})),
            Detection("okapi", 0.7, frozenset({"okapi"}))]
    known = {"a", "dog", "dogs", "horse"}
    assert [d.word for d in missing_detections(dets, ["a"], 0.5, 2, known)] == ["okapi", "zebra"]
    assert [d.word for d in missing_detections(dets, ["a"], 0.65, 1, known)] == ["okapi"]
    # a new word with no known word to copy from cannot be said: the next detection is forced instead
    sources = {"zebra": "horse"}.get
    assert [d.word for d in missing_detections(dets, ["a"], 0.5, 2, known, sources)] == ["zebra", "dog"]


def test_extend_vocabulary_copies_the_nearest_word_dcc():
    m = tiny()
    rng = np.random.default_rng(0)
    base = {w: rng.normal(size=5).astype(np.float32) for w in WORDS + ["kitten"]}
    base["kitten"] = base["cat"] + 0.01  # nearest known word: cat
    vectors = WordVectors(list(base), np.stack(list(base.values())))
    assert nearest_known("kitten", m.vocab, vectors)[0][0] == "cat"
    ext, added = extend_vocabulary(m, ["kitten", "zzz", "dog"], vectors)
    assert list(added) == ["kitten"] and ext.vocab.itos[-1] == "kitten" and len(ext.vocab) == len(m.vocab) + 1
    k, cat = added["kitten"], m.vocab.stoi["cat"]
    assert torch.equal(ext.decoder.out.weight[k], m.decoder.out.weight[cat])
    assert torch.equal(ext.decoder.out.bias[k], m.decoder.out.bias[cat])
    # the old words keep their weights, so the copy scores them as the original does
    assert torch.equal(ext.decoder.out.weight[:len(m.vocab)], m.decoder.out.weight)
    pooled, _ = feats(1)
    with torch.no_grad():
        ids, _, met = constrained_beam_search(ext.decoder, pooled, None, [[[k]]], 3, 10)
    assert met.all() and "kitten" in ext.vocab.decode_tokens(ids[0].tolist())


def test_tags_are_nouns_and_adjectives_merged_once():
    assert not is_tag_word("wearing") and not is_tag_word("holding") and not is_tag_word("little")
    assert is_tag_word("building") and is_tag_word("red") and is_tag_word("dog")
    head = [("dogs", 0.4), ("wearing", 0.9), ("grass", 0.5)]
    dets = [Detection("dog", 0.8, frozenset({"dog", "dogs"})), Detection("cat", 0.3, frozenset({"cat"}))]
    assert merge_tags(head, dets) == [("dogs", 0.8), ("grass", 0.5), ("cat", 0.3)]
    assert merge_tags(head, dets, top=1) == [("dogs", 0.8)]


def test_detector_on_the_exact_head_if_weights_are_here():
    from img2text2img.errors import I2TError
    from img2text2img.openvocab import WordDetector

    with pytest.raises(I2TError, match="ImageNet head"):
        WordDetector("small_cnn")
    try:
        d = WordDetector("mobilenet_v2", calibration=(1.0, 0.0))
    except I2TError:
        pytest.skip("mobilenet_v2 weights not on this machine")
    torch.manual_seed(0)
    pooled = torch.rand(2, 1280)
    raw = d.raw_scores(pooled)
    assert raw.shape == (2, len(d.table.words)) and torch.all(raw.sum(1) <= 1.0 + 1e-5)
    logits = d.class_logits(pooled)
    dog_classes = [c for c, ws in enumerate(d.table.classes) if ws and d.table.words[ws[0]] == "dog"]
    expect = torch.softmax(logits, -1)[:, dog_classes].sum(1)
    assert torch.allclose(raw[:, d.table.words.index("dog")], expect, atol=1e-6)
    assert d.detect(pooled, top=3)[0][0].score >= d.detect(pooled, top=3)[0][-1].score


def test_without_words_drops_training_captions_only(tmp_path):
    from img2text2img.data import CaptionDataset
    from img2text2img.openvocab.heldout import parse_words, without_words

    ds = CaptionDataset(tmp_path, "t", {"a": ["a cat sits", "a dog runs"], "b": ["two horses"], "c": ["a cat"]},
                        {"train": ["a", "b"], "test": ["c"]})
    out = without_words(ds, "cat, horse")
    assert out.captions == {"a": ["a dog runs"], "b": [], "c": ["a cat"]}  # plural "horses" too; test untouched
    assert ds.captions["a"] == ["a cat sits", "a dog runs"]  # the original is not changed
    assert parse_words(" Cat,cat, horse ") == ["cat", "horse"]
    with pytest.raises(Exception, match="no words"):
        parse_words(" , ")


def test_recipe_has_the_exclude_words_option():
    from img2text2img.train.captioner_recipe import CaptionerRecipe

    assert CaptionerRecipe().exclude_words == "" and CaptionerRecipe(exclude_words="cat").exclude_words == "cat"


def test_adapter_detector_is_found_by_the_encoders_weights(tmp_path):
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from img2text2img.errors import I2TError
    from img2text2img.openvocab import WordDetector
    from img2text2img.openvocab.detector import adapter_path, detector_for_encoder

    try:
        plain = WordDetector("mobilenet_v2", calibration=(1.0, 0.0))
    except I2TError:
        pytest.skip("mobilenet_v2 weights not on this machine")
    enc = SimpleNamespace(name="mobilenet_v2", model=torch.nn.Linear(3, 3))
    assert detector_for_encoder(enc, fine_tuned=True, root=tmp_path) is None  # no adapter fitted: no detector
    other = SimpleNamespace(name="mobilenet_v2", model=torch.nn.Linear(3, 3))
    assert adapter_path(enc, tmp_path) != adapter_path(other, tmp_path)  # named by the weights, not the encoder
    save_file({"weight": torch.eye(1280).half(), "bias": torch.zeros(1280).half()}, str(adapter_path(enc, tmp_path)))
    det = detector_for_encoder(enc, fine_tuned=True, root=tmp_path)
    assert det is not None and det.adapter is not None
    pooled = torch.rand(2, 1280)
    assert torch.allclose(det.class_logits(pooled), plain.class_logits(pooled), atol=1e-4)  # identity adapter
    assert detector_for_encoder(enc, fine_tuned=False, root=tmp_path).adapter is None  # frozen: the exact head
    assert detector_for_encoder(SimpleNamespace(name="small_cnn"), fine_tuned=False) is None


@pytest.mark.parametrize("args,needle", [
    (["caption", "{img}", "--data", "shapes", "--open-vocab"], "exact ImageNet head"),
    (["tag", "{img}", "--data", "shapes", "--open-vocab"], "exact ImageNet head"),
])
def test_cli_open_vocab_refuses_in_one_line(tmp_path, capsys, args, needle):
    from PIL import Image

    from img2text2img.cli import main

    img = tmp_path / "i.png"
    Image.new("RGB", (32, 32), "red").save(img)
    assert main([a.format(img=img) for a in args]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and needle in err


def test_cli_open_vocab_tags_name_a_shipped_taggers_objects(tmp_path, capsys, flickr8k_dog_photo):
    import json

    from PIL import Image

    from img2text2img.cli import main
    from img2text2img.errors import I2TError

    try:
        from img2text2img.openvocab import word_detector
        word_detector("efficientnet_lite0")
    except I2TError:
        pytest.skip("EfficientNet-Lite0 weights not on this machine")
    img = tmp_path / "i.png"
    Image.new("RGB", (64, 64), "white").save(img)
    rows = {}
    for backend in ("torch", "onnx"):
        assert main(["tag", str(img), "--json", "--top", "5", "--backend", backend]) == 0  # on by default
        rows[backend] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tags"]
        assert len(rows[backend]) <= 5 and all(is_tag_word(t) for t, _ in rows[backend])
    assert [t for t, _ in rows["torch"]] == [t for t, _ in rows["onnx"]]
    from img2text2img.api import tag

    photo = flickr8k_dog_photo.parent / "1007129816_e794419615.jpg"  # merging drops the head's "wearing" here
    head = [t for t, _ in tag([photo], top=5, backend="torch", open_vocab=False)[0]]
    assert "wearing" in head
    assert head != [t for t, _ in tag([photo], top=5, backend="torch")[0]]
    for backend in ("torch", "onnx"):  # off: the tag head's words alone on both paths (torch once merged anyway)
        assert main(["tag", str(photo), "--json", "--top", "5", "--no-open-vocab", "--backend", backend]) == 0
        line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert line["file"] == str(photo) and [t for t, _ in line["tags"]] == head, backend


def test_constrained_search_ends_at_a_full_stop():
    m = tiny()
    pooled, _ = feats(3)
    stop, cat = m.vocab.stoi["on"], m.vocab.stoi["cat"]  # "on" plays "." in the tiny vocabulary
    with torch.no_grad():
        m.decoder.out.bias[stop] += 3.0  # a model that says "." early
        ids, _, met = constrained_beam_search(m.decoder, pooled, None, [[[cat]]] * 3, 3, 10, full_stop=stop)
    for row in ids.tolist():
        if stop in row:
            assert row[row.index(stop) + 1] == END_ID
    assert met.all()


def test_calibration_is_read_per_detector(tmp_path):
    import json

    from img2text2img.openvocab.detector import CALIBRATION, read_calibration

    p = tmp_path / "c.json"
    p.write_text(json.dumps({"enc": {"a": 2.0, "b": 1.0}, "enc+adapter": {"a": 0.5, "b": -1.0}}))
    assert read_calibration("enc", False, p) == (2.0, 1.0) and read_calibration("enc", True, p) == (0.5, -1.0)
    assert read_calibration("other", False, p) == (1.0, 0.0) and read_calibration("enc", False, tmp_path / "no") == (1.0, 0.0)
    shipped = json.loads(CALIBRATION.read_text())  # both detectors of the shipped models are calibrated
    assert {"efficientnet_lite0", "efficientnet_lite0+adapter"} <= set(shipped)


def test_lexical_head_fits_saves_restricts_and_merges(tmp_path):
    from img2text2img.openvocab.lexical import fit_lexical, lexical_path, load_lexical, merge_detections, save_lexical

    rng = np.random.default_rng(0)
    x = (rng.normal(size=(400, 6)) * 3 + 5).astype(np.float32)  # not standardised: the fit folds its scaling back
    y = np.stack([x[:, 0] > 5, x[:, 1] + x[:, 2] > 10, x[:, 3] < 3], 1).astype(np.float32)
    w, b = fit_lexical(x, y, 1e-3)
    p = 1 / (1 + np.exp(-(x @ w.T + b)))
    assert ((p > 0.5) == (y > 0)).mean() > 0.95
    save_lexical(lexical_path("enc", tmp_path), ["horse", "dog", "zebra"], w, b, {"test": True})
    head = load_lexical("enc", root=tmp_path)
    assert head.words == ("horse", "dog", "zebra") and np.allclose(head(x), p, atol=2e-2)  # fp16 weights
    assert load_lexical("other", root=tmp_path) is None
    assert load_lexical("enc", root=tmp_path, known={"horses", "dog"}).words == ("zebra",)
    assert head.restricted({"a", "dogs"}).words == ("horse", "zebra")  # a plural in the vocabulary knows the word
    assert head.restricted({"horse", "dog", "zebra"}) is None
    dets = head.detect(x[:2], top=3, min_score=0.0)
    assert all(d[0].score >= d[-1].score for d in dets) and {"horse", "horses"} <= head.names[0]
    a = [[Detection("dog", 0.4, frozenset({"dog"})), Detection("car", 0.9, frozenset({"car"}))]]
    b2 = [[Detection("dog", 0.7, frozenset({"dog"}))]]
    assert [(d.word, d.score) for d in merge_detections(a, b2)[0]] == [("car", 0.9), ("dog", 0.7)]


def test_lexical_head_puts_a_word_the_captioner_never_learnt_into_its_caption(tmp_path, monkeypatch):
    """DCC: a word the paired captions lack but the photos' labels have is forced in from the lexical head."""
    from types import SimpleNamespace

    from img2text2img.errors import I2TError
    from img2text2img.models.captioner.openvocab import OpenVocab
    from img2text2img.openvocab import lexical

    torch.manual_seed(0)
    m = create_captioner("mobilenet_v2+lstm-tiny", Vocabulary(["<pad>", "<start>", "<end>", "<unk>", *WORDS]),
                         feature_dim=1280).eval()
    monkeypatch.setattr(lexical, "LEXICAL", tmp_path)
    D = 1280
    lexical.save_lexical(lexical.lexical_path("mobilenet_v2"), ["zebra", "dog", "kite"], np.zeros((3, D)),
                         np.array([8.0, 8.0, -8.0], dtype=np.float32), {"test": True})
    rng = np.random.default_rng(0)
    base = {w: rng.normal(size=5).astype(np.float32) for w in WORDS + ["zebra", "kite"]}
    base["zebra"] = base["cat"] + 0.01
    try:
        ov = OpenVocab(m, vectors=WordVectors(list(base), np.stack(list(base.values()))))
    except I2TError:
        pytest.skip("mobilenet_v2 weights not on this machine")
    assert ov.lexical.words == ("zebra", "kite")  # "dog" is the captioner's own word: left to it
    pooled = torch.rand(2, D)
    plain = [SimpleNamespace(tokens=["a", "dog", "runs"])] * 2
    new = ov.redecode(pooled, None, plain, 3, 10, threshold=0.99, max_words=1)
    assert sorted(new) == [0, 1] and all("zebra" in toks for toks, _ in new.values())
    monkeypatch.setattr(ov, "lexical", None)  # without it the ImageNet head alone is never this sure
    assert ov.redecode(pooled, None, plain, 3, 10, threshold=0.99, max_words=1) == {}


def test_lexical_head_leaves_the_shipped_flickr8k_captioner_as_it_was():
    """Every word of the shipped lexical head is a word the shipped captioner can say, so its captions (and the
    home scores in docs/RESULTS.md) do not change: the head only serves captioners that lack words."""
    from pathlib import Path

    from img2text2img.openvocab.lexical import load_lexical

    root = Path(__file__).resolve().parents[1] / "img2text2img" / "pretrained" / "captioner"
    head = load_lexical("efficientnet_lite0")
    assert head is not None and {"horse", "cow", "bicycle", "guitar"} <= set(head.words)
    assert load_lexical("efficientnet_lite0", known=Vocabulary.load(root / "vocab.json").stoi) is None


@pytest.mark.parametrize("decoder", ["lstm", "attention"])
def test_say_once_stops_a_caption_repeating_a_content_word(decoder):
    """A model that loves "dog" loops ("a dog dog dog"); with say_once every content word comes at most once, while
    colours and function words may repeat."""
    from img2text2img.models.captioner.search import say_once
    from img2text2img.tags import said_once

    m = tiny(decoder)
    with torch.no_grad():
        m.decoder.out.bias[m.vocab.stoi["dog"]] += 6.0
    once = torch.tensor(said_once(m.vocab.itos))
    assert not once[m.vocab.stoi["red"]] and not once[m.vocab.stoi["a"]] and once[m.vocab.stoi["dog"]]
    pooled, grid = feats(3)
    g = grid if m.config.uses_grid else None
    with torch.no_grad():
        for search in (lambda o: greedy_search(m.decoder, pooled, g, 12, o)[0],
                       lambda o: beam_search(m.decoder, pooled, g, 3, 12, 0.7, o)[0],
                       lambda o: constrained_beam_search(m.decoder, pooled, g, [[[m.vocab.stoi["ball"]]]] * 3, 3,
                                                         12, 0.7, once=o)[0]):
            loops = [m.vocab.decode_tokens(r) for r in search(None).tolist()]
            assert any(t.count("dog") > 1 for t in loops)  # the test model does loop
            for toks in (m.vocab.decode_tokens(r) for r in search(once).tolist()):
                assert all(toks.count(w) <= 1 for w in toks if once[m.vocab.stoi[w]])
    logp = torch.log_softmax(torch.randn(2, len(m.vocab)), -1)
    prefix = torch.tensor([[START_ID, m.vocab.stoi["dog"]], [START_ID, m.vocab.stoi["red"]]])
    out = say_once(logp, prefix, once)
    assert out[0, m.vocab.stoi["dog"]] == -math.inf and out[1, m.vocab.stoi["red"]] == logp[1, m.vocab.stoi["red"]]
    from img2text2img.runtime.search import say_once as numpy_say_once

    assert np.array_equal(numpy_say_once(logp.numpy().copy(), prefix.numpy(), once.numpy()), out.numpy())


def test_cli_say_once_is_the_shipped_captioners_default(capsys, flickr8k_dog_photo):
    """On this photo the shipped captioner's own search writes "a man wearing a hat and a hat ."; with say_once (on
    for it) neither backend repeats a content word, and --allow-repeats gives the loop back."""
    from img2text2img.cli import main

    photo = str(flickr8k_dog_photo.parent / "1007129816_e794419615.jpg")
    captions = {}
    for flag in ([], ["--allow-repeats"]):
        for backend in ("torch", "onnx"):
            assert main(["caption", photo, "--backend", backend, *flag]) == 0
            captions[(bool(flag), backend)] = capsys.readouterr().out.strip().split("\t")[-1]
    assert captions[(False, "torch")] == captions[(False, "onnx")]
    assert captions[(True, "torch")] == captions[(True, "onnx")]
    assert captions[(True, "onnx")].split().count("hat") == 2
    assert captions[(False, "onnx")].split().count("hat") <= 1
