"""Words without torch: a model folder's `vocab.json`, the toolkit's tokenizer, and ids back to words.

The tokenizer and specials are `img2text2img.words`'s, as the vocabulary's are; tests/test_runtime.py checks that
both decode alike.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from img2text2img.errors import I2TError
from img2text2img.words import END_ID, PAD_ID, SPECIALS, START_ID, UNK_ID, decode_ids, tokenize  # noqa: F401  (re-exported)

NUM_SPECIALS = len(SPECIALS)


class Words:
    """A vocabulary read from `vocab.json`: ids <-> words."""

    def __init__(self, itos: list[str]):
        self.itos = itos
        self.stoi = {w: i for i, w in enumerate(itos)}

    @classmethod
    def load(cls, path: Path) -> Words:
        try:
            return cls(list(json.loads(path.read_text(encoding="utf-8"))["words"]))
        except FileNotFoundError:
            raise I2TError(f"vocabulary file missing: {path}") from None
        except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError) as e:
            raise I2TError(f"{path}: not a valid vocab.json ({type(e).__name__})") from None

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, word: str) -> bool:
        return word in self.stoi

    def encode(self, tokens: list[str]) -> list[int]:
        return [START_ID, *(self.stoi.get(t, UNK_ID) for t in tokens), END_ID]

    def decode_tokens(self, ids: Iterable[int]) -> list[str]:
        """Ids -> words, stopping at <end> and dropping the other specials (`words.decode_ids`)."""
        return decode_ids(ids, self.itos)
