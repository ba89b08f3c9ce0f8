"""Words without torch: the special tokens, the tokenizer and the checks every prompt passes, shared by the
vocabulary (`vocab.py`), the generators and the torch-free runtime so that all read a sentence the same way."""
from __future__ import annotations

import re
import warnings
from collections.abc import Container, Iterable, Sequence

from img2text2img.errors import I2TError

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)
PAD_ID, START_ID, END_ID, UNK_ID = 0, 1, 2, 3
MAX_PROMPT_CHARS = 10_000

# Words (any script), clitics split GloVe-style ("dog's" -> "dog", "'s"), every other symbol its own token.
TOKEN_RE = re.compile(r"[^\W_]+|'[^\W_]+|[^\w\s]|_", re.UNICODE)


def tokenize(text: str) -> list[str]:
    """Lowercase and split into words and punctuation; deterministic and needs no downloaded tokenizer data."""
    return TOKEN_RE.findall(text.lower())


def decode_ids(ids: Iterable[int], itos: Sequence[str]) -> list[str]:
    """Ids -> words, stopping at <end> and dropping the other specials: the one place specials are stripped."""
    out = []
    for i in ids:
        i = int(i)
        if i == END_ID:
            break
        if i < len(SPECIALS) or i >= len(itos):
            continue
        out.append(itos[i])
    return out


class PromptWarning(UserWarning):
    """A prompt was used but not as written (unknown words, truncated); the CLI shows these as warnings."""


def prompt_tokens(texts: Sequence[str] | str, known: Container[str], max_tokens: int) -> list[list[str]]:
    """Prompts -> their tokens, checked. Empty prompts are an error; unknown words and over-long prompts are a
    `PromptWarning` (the picture is still drawn, from the words that are known / kept)."""
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise I2TError("no prompt given")
    out = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise I2TError("empty prompt: give a sentence such as 'a red circle on the left'")
        if len(text) > MAX_PROMPT_CHARS:
            warnings.warn(f"prompt is {len(text):,} characters; only the first {MAX_PROMPT_CHARS:,} are read",
                          PromptWarning, stacklevel=4)
            text = text[:MAX_PROMPT_CHARS]
        tokens = tokenize(text)
        if not tokens:
            raise I2TError(f"prompt {text[:40]!r} has no words")
        if len(tokens) > max_tokens:
            warnings.warn(f"prompt has {len(tokens)} words; only the first {max_tokens} are used", PromptWarning,
                          stacklevel=4)
            tokens = tokens[:max_tokens]
        unknown = sorted({t for t in tokens if t not in known})
        if unknown:
            shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            warnings.warn(f"words the generator has never seen (read as <unk>): {shown}", PromptWarning, stacklevel=4)
        out.append(tokens)
    return out
