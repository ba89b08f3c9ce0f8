"""The shipped ImageNet class -> caption words table (`imagenet_words.tsv`), as a matrix the detector sums with.

Torch-free (numpy only): the ONNX runtime's detector reads it too."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from img2text2img.errors import I2TError
from img2text2img.tags import IRREGULAR

TABLE = Path(__file__).with_name("imagenet_words.tsv")
FIRST_OBJECT = 398  # ImageNet's classes 0..397 are animals, the rest objects, food and scenes
PLURALS = {v: k for k, v in IRREGULAR.items()}


def plural_forms(word: str) -> tuple[str, ...]:
    """The word and the plural a caption would use ("dog" -> dog, dogs; "bus" -> bus, buses; "man" -> man, men)."""
    if word in PLURALS:
        return word, PLURALS[word]
    if word.endswith(("s", "sh", "ch", "x", "z")):
        return word, word + "es"
    if word.endswith("y") and len(word) > 2 and word[-2] not in "aeiou":
        return word, word[:-1] + "ies"
    return word, word + "s"


@dataclass(frozen=True)
class Detection:
    word: str
    score: float  # calibrated probability that the photo's description names the word
    names: frozenset[str]  # caption tokens that count as naming it


@dataclass(frozen=True)
class WordTable:
    """`words`: the main words, each once; `alternatives[i]`: the words that also name word i in a caption;
    `classes[c]`: the word ids class c maps to (empty: no plain word)."""

    words: tuple[str, ...]
    alternatives: tuple[tuple[str, ...], ...]
    classes: tuple[tuple[int, ...], ...]
    labels: tuple[str, ...]

    def matrix(self) -> np.ndarray:
        """[1000, W] 0/1: class c counts towards word w (its main word), so a word's probability is the sum over
        its classes: 118 dog breeds that each look unlikely add up to a sure "dog"."""
        m = np.zeros((len(self.classes), len(self.words)), dtype=np.float32)
        for c, ws in enumerate(self.classes):
            for w in ws:
                m[c, w] = 1.0
        return m

    def is_animal(self, word: str) -> bool:
        """Whether `word` names animal classes (ImageNet lists its animals first, indices 0 to 397)."""
        if word not in self.words:
            return False
        i = self.words.index(word)
        return any(c < FIRST_OBJECT for c, ws in enumerate(self.classes) if i in ws)

    def names(self, word: str) -> frozenset[str]:
        """Every caption token that counts as naming `word` (its alternatives and their plurals)."""
        try:
            i = self.words.index(word)
        except ValueError:
            return frozenset(plural_forms(word))
        return frozenset(f for a in self.alternatives[i] for f in plural_forms(a))


@lru_cache(maxsize=4)
def load_word_table(path: str | Path | None = None) -> WordTable:
    """Read the table. A row's words are alternatives, main first; the main word is the class's word, and a class
    whose main word is also an alternative of other rows keeps its own entry ("bird" of eagle and of robin)."""
    p = Path(path) if path is not None else TABLE
    try:
        lines = [ln for ln in p.read_text(encoding="utf-8").splitlines() if ln and not ln.startswith("#")]
    except OSError as e:
        raise I2TError(f"cannot read the ImageNet words table {p}: {e.strerror}") from None
    words: list[str] = []
    alts: dict[str, list[str]] = {}
    classes: list[tuple[int, ...]] = []
    labels: list[str] = []
    for n, ln in enumerate(lines):
        parts = ln.split("\t")
        if len(parts) != 3 or not parts[0].isdigit() or int(parts[0]) != n:
            raise I2TError(f"{p}: line {n + 2} is not 'index<TAB>label<TAB>words' in order")
        labels.append(parts[1])
        row = [w.strip() for w in parts[2].split(",") if w.strip() and w.strip() != "-"]
        if not row:
            classes.append(())
            continue
        main = row[0]
        if main not in alts:
            words.append(main)
            alts[main] = [main]
        alts[main] += [w for w in row[1:] if w not in alts[main]]
        classes.append((words.index(main),))
    return WordTable(tuple(words), tuple(tuple(alts[w]) for w in words), tuple(classes), tuple(labels))
