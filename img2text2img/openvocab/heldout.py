"""Held-out objects (the DCC protocol, Hendricks et al. 2016): a training set with every caption that names some
words removed, so that a captioner never learns them and open vocabulary must supply them."""
from __future__ import annotations

from dataclasses import replace

from img2text2img.errors import I2TError
from img2text2img.openvocab.words import plural_forms
from img2text2img.vocab import tokenize


def parse_words(text: str) -> list[str]:
    """"cat, horse" -> ["cat", "horse"]: lower-case, each once, in order; a one-line error for an empty list."""
    words = list(dict.fromkeys(w.strip().lower() for w in text.split(",") if w.strip()))
    if not words:
        raise I2TError(f"no words in {text!r} (give them comma-separated: cat,horse)")
    return words


def word_forms(words: list[str]) -> frozenset[str]:
    """Every token that names one of `words` (the word and its plural)."""
    return frozenset(f for w in words for f in plural_forms(w))


def mentions(caption: str, forms: frozenset[str]) -> bool:
    return not forms.isdisjoint(tokenize(caption))


def without_words(dataset, words: str | list[str], split: str = "train"):
    """A copy of caption dataset `dataset` whose `split` captions never name `words` (a photo left with none drops
    out of training). Other splits keep every caption: validation and test are scored on the true references."""
    forms = word_forms(parse_words(words) if isinstance(words, str) else list(words))
    captions = dict(dataset.captions)
    for im in dataset.split(split):
        if im in captions:
            captions[im] = [c for c in captions[im] if not mentions(c, forms)]
    return replace(dataset, captions=captions)
