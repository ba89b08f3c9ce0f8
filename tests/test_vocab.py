"""Tokenizer and vocabulary: deterministic ids, lossless round trips, strict loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from img2text2img.errors import I2TError
from img2text2img.vocab import (
    END_ID,
    PAD_ID,
    SPECIALS,
    START_ID,
    UNK_ID,
    SharedEmbedding,
    Vocabulary,
    WordVectors,
    load_word_vectors,
    pad_batch,
    tokenize,
)

CAPS = ["A dog runs on the grass .", "The dog's ball is red!", "a red ball", "Two dogs play."]


def test_tokenize_splits_punctuation_and_clitics():
    assert tokenize("The dog's ball, is RED!") == ["the", "dog", "'s", "ball", ",", "is", "red", "!"]
    assert tokenize("  ") == []
    assert tokenize("café 東京 🐶") == ["café", "東京", "🐶"]


def test_build_is_order_independent_and_specials_fixed():
    a = Vocabulary.build(CAPS)
    b = Vocabulary.build(list(reversed(CAPS)))
    assert a.itos == b.itos
    assert a.itos[:4] == list(SPECIALS)
    assert (PAD_ID, START_ID, END_ID, UNK_ID) == (0, 1, 2, 3)
    assert a.itos[4] in ("dog", "a", "red", "ball", ".")  # most frequent first
    assert a.counts[a.stoi["dog"]] == 2


def test_min_count_and_max_size():
    v = Vocabulary.build(CAPS, min_count=2)
    assert "grass" not in v and "dog" in v
    assert len(Vocabulary.build(CAPS, max_size=6)) == 6


def test_encode_decode_and_unknowns():
    v = Vocabulary.build(CAPS)
    ids = v.encode("a red zebra")
    assert ids[0] == START_ID and ids[-1] == END_ID and UNK_ID in ids
    assert v.decode(ids) == "a red"  # <unk> and specials dropped
    assert v.decode([START_ID, v.id("red"), END_ID, v.id("dog")]) == "red"  # stops at <end>
    assert v.unknown_words("a red zebra") == ["zebra"]


def test_save_load_roundtrip_and_errors(tmp_path):
    v = Vocabulary.build(CAPS)
    v.save(tmp_path / "vocab.json")
    w = Vocabulary.load(tmp_path / "vocab.json")
    assert v == w and v.sha256 == w.sha256
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(I2TError, match="not a valid vocab.json"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(I2TError, match="missing"):
        Vocabulary.load(tmp_path / "nope.json")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), min_size=1, max_size=8))
def test_fuzz_tokenize_vocab_decode(texts):
    v = Vocabulary.build(texts)
    for t in texts:
        toks = tokenize(t)
        assert tokenize(t) == toks  # deterministic
        assert all(tok.strip() == tok and tok for tok in toks)
        # Every word of a caption the vocabulary was built from survives encode -> decode, specials aside.
        assert v.decode_tokens(v.encode(t)) == [x for x in toks if x not in SPECIALS]


def test_pad_batch():
    b = pad_batch([[1, 5, 2], [1, 2]])
    assert b.tolist() == [[1, 5, 2], [1, 2, 0]]


def test_shared_embedding_glove_init_and_freeze(tmp_path):
    v = Vocabulary.build(CAPS)
    vec = WordVectors(["dog", "red", "the"], np.arange(12, dtype=np.float32).reshape(3, 4))
    emb = SharedEmbedding(len(v), 4)
    report = emb.init_from_vectors(v, vec)
    assert report["covered"] == 3 and 0 < report["coverage"] < 1
    assert torch.equal(emb(torch.tensor([v.id("red")]))[0], torch.tensor([4.0, 5, 6, 7]))
    assert emb(torch.tensor([PAD_ID])).abs().sum() == 0
    emb.freeze()
    assert not any(p.requires_grad for p in emb.parameters())
    with pytest.raises(I2TError, match="50-d|4-d"):
        SharedEmbedding(len(v), 50).init_from_vectors(v, vec)
    # GloVe text format
    (tmp_path / "g.txt").write_text("dog 1 2 3 4\nred 0 0 0 1\n")
    assert load_word_vectors(tmp_path / "g.txt").dim == 4


def test_shared_glove_slice_loads_when_present():
    from img2text2img import locations

    d = locations.embeddings_dir()
    if d is None:
        pytest.skip("no shared embeddings here")
    wv = load_word_vectors(d)
    assert wv.matrix.shape == (20000, 50) and wv.words[0] == "the"
    assert abs(float(wv.matrix[0, 0]) - 0.418) < 1e-4
