"""Which detected words a caption must take, and as which vocabulary ids: shared by the torch captioner and the ONNX
runtime (numpy only), so both force the same words.

A word the caption vocabulary lacks ("zebra" in Flickr8k, or "car" for a captioner that never saw it) gets a new id
after the vocabulary, DCC-style (Hendricks et al. 2016): it borrows every row of its source word, the nearest known
word in GloVe ("animal" for an animal GloVe lacks), so it is read and scored as that word would be. A copy rather
than a blend keeps the decoder's graphs usable unchanged: the runtime feeds the source's id for it.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass

from img2text2img.openvocab.words import Detection

MAX_CONSTRAINTS = 2  # 2**C beams per image: four times the work of a plain beam search at two


def missing_detections(detections: Sequence[Detection], tokens: Sequence[str], threshold: float,
                       max_words: int = MAX_CONSTRAINTS, known: Collection[str] = (),
                       source_of: Callable[[str], str | None] | None = None) -> list[Detection]:
    """The confident detections (score >= threshold) that no token of the caption names: words outside `known`
    (the caption vocabulary) first, then by score. The captioner could have said a known word and chose not to; a
    word it never learnt it cannot say at all, so that is where the detector adds most (held-out val F1 #13).
    With `source_of`, a detection the caption cannot be made to say (no known name, no source word) is skipped."""
    have = set(tokens)
    missing = [d for d in detections if d.score >= threshold and not (d.names & have)
               and (source_of is None or any(n in known for n in d.names) or source_of(d.word) in known)]
    return sorted(missing, key=lambda d: (d.word in known, -d.score))[:max_words]


@dataclass(frozen=True)
class Plan:
    """`added`: new words, ids len(vocab) + i; `source[i]`: the known id word i copies; `rows`: the photos to decode
    again; `constraints[j]`: photo rows[j]'s constraints, each a list of alternative ids."""

    added: tuple[str, ...]
    source: tuple[int, ...]
    rows: tuple[int, ...]
    constraints: tuple[tuple[tuple[int, ...], ...], ...]


def plan_redecode(todo: Mapping[int, Sequence[Detection]], stoi: Mapping[str, int],
                  source_of: Callable[[str], str | None]) -> Plan:
    """The words to add and each photo's constraints. A detection's main word is always one of its alternatives
    (added when the vocabulary lacks it and it has a source), so a held-out "car" is not replaced by "jeep"."""
    new = sorted({d.word for m in todo.values() for d in m if d.word not in stoi})
    sources = {w: source_of(w) for w in new}
    added = tuple(w for w in new if sources[w] in stoi)
    ids = {w: len(stoi) + i for i, w in enumerate(added)}
    rows, cons = [], []
    for i, m in todo.items():
        c = []
        for d in m:
            alts = {stoi[n] for n in d.names if n in stoi}
            if d.word in ids:
                alts.add(ids[d.word])
            if alts:
                c.append(tuple(sorted(alts)))
        if c:
            rows.append(i)
            cons.append(tuple(c))
    return Plan(added, tuple(stoi[sources[w]] for w in added), tuple(rows), tuple(cons))
