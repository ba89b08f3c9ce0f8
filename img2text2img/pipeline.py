"""Encode the next batch while the current one is searched: how the torch and the torch-free captioners caption many
photos (the encoder is one big op that leaves a core free; the beam search is many small ones)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def encode_ahead(batches: Sequence[Any], encode: Callable[[Any], tuple], decode: Callable[..., list]) -> list:
    """[decode(*encode(b)) for b in batches], flattened, with batch j+1 encoded in a thread while j is decoded."""
    out: list = []
    with ThreadPoolExecutor(1, thread_name_prefix="i2t-encode") as pool:
        pending = pool.submit(encode, batches[0])
        for j in range(len(batches)):
            encoded = pending.result()
            if j + 1 < len(batches):
                pending = pool.submit(encode, batches[j + 1])
            out.extend(decode(*encoded))
    return out
