"""Which words may be tags, and the tag head's words merged with the detector's: torch-free, so the ONNX runtime
tags with open vocabulary exactly as the torch tagger does.

Tags are the things in the photo, so only nouns and adjectives are kept. There is no POS tagger offline, so verbs
and vague words are dropped by a shipped list: "-ing" forms except the nouns among them ("building", "swing"), and
the few other verbs and size words the Flickr8k head emits ("little", "stand"). Both sources score "the photo's
description names this word" (the tag head by its training target, the detector by its calibration), so a word
found by both keeps the higher score and the lists sort together.
"""
from __future__ import annotations

from collections.abc import Sequence

from img2text2img.openvocab.words import Detection, plural_forms

ING_NOUNS = frozenset("""
building buildings clothing ceiling painting paintings swing swings ring rings king string wedding evening morning
spring railing railings stuffing pudding icing awning awnings sibling siblings ping ceiling bedding sing sling wing
wings thing things lightning parking pudding offering sling shopping
""".split())  # noqa: SIM905 - a word list reads best as text
NOT_TAGS = frozenset("""
little small big large young tiny huge giant other another several different many few stand stands sit sits run runs
jump jumps look looks ride rides play plays walk walks hold holds wear wears climb climbs swim swims pose poses smile
smiles watch watches wait waits catch catches carry carries throw throws lay lays lie lies get gets stare stares
pull pulls push pushes sits front top together near behind area something dressed covered filled
""".split())  # noqa: SIM905 - a word list reads best as text


# chosen on the 1,000 Flickr8k val photos (scripts/openvocab_eval.py --tagger): the lowest detector score at which
# merged tags keep the noun-and-adjective tags' micro F1 at home (docs/bench/openvocab.json, tagger_val)
DETECT_THRESHOLD = 0.5


def is_tag_word(word: str) -> bool:
    """Whether `word` may be a tag: a noun or adjective, as far as the lists above can tell."""
    if word in NOT_TAGS:
        return False
    return not (word.endswith("ing") and word not in ING_NOUNS)


def merge_tags(head: Sequence[tuple[str, float]], detections: Sequence[Detection], top: int | None = 10
               ) -> list[tuple[str, float]]:
    """The tag head's (tag, score) pairs and the detector's words as one list, content words only, each word once
    (a detected word also counts for the head's tag of its plural, "dogs"), highest score first."""
    best: dict[str, float] = {}
    for w, s in head:
        if is_tag_word(w):
            best[w] = max(best.get(w, 0.0), float(s))
    for d in detections:
        if not is_tag_word(d.word):
            continue
        same = [w for w in plural_forms(d.word) if w in best]
        if same:
            for w in same:
                best[w] = max(best[w], d.score)
        else:
            best[d.word] = max(best.get(d.word, 0.0), d.score)
    ranked = sorted(best.items(), key=lambda kv: (-kv[1], kv[0]))
    return ranked[:top] if top else ranked
