"""Open-vocabulary tags: the Flickr8k tag head's words merged with the words the encoder's ImageNet head names.

Tags are the things in the photo, so only nouns and adjectives are kept. There is no POS tagger offline, so verbs
and vague words are dropped by a shipped list: "-ing" forms except the nouns among them ("building", "swing"), and
the few other verbs and size words the Flickr8k head emits ("little", "stand"). Both sources score "the photo's
description names this word" (the tag head by its training target, the detector by its calibration), so a word
found by both keeps the higher score and the lists sort together.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from img2text2img.data.images import prepare_image
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.openvocab import Detection, has_imagenet_head, plural_forms
from img2text2img.openvocab.detector import detector_for_encoder

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


def tagger_detector(tagger, strict: bool = False):
    """The word detector reading `tagger`'s features, or None (`strict`: a one-line error saying why)."""
    detector = detector_for_encoder(tagger.encoder, tagger.encoder_trained)
    if detector is None and strict:
        why = ("has no exact ImageNet head" if not has_imagenet_head(tagger.encoder.name)
               else "was fine-tuned and has no fitted adapter")
        raise I2TError(f"open vocabulary: this tagger's encoder ({tagger.encoder.name}) {why}")
    return detector


class OpenVocabTagger:
    """`BulkTagger`'s call with the detector's words merged in; refuses a tagger whose features it cannot read."""

    def __init__(self, tagger):
        self.tagger = tagger
        tagger_detector(tagger, strict=True)

    def __call__(self, images: Sequence, top: int | None = 10, batch_size: int = 32) -> list[list[tuple[str, float]]]:
        return tag_open_vocab(self.tagger, images, top=top, batch_size=batch_size)


@torch.no_grad()
def tag_open_vocab(tagger, images: Sequence, top: int | None = 10, batch_size: int = 32,
                   threshold: float | None = None) -> list[list[tuple[str, float]]]:
    """Tag PIL images with `tagger` and its encoder's ImageNet head. Detected words need a calibrated score of
    `threshold` (None: DETECT_THRESHOLD); a tagger whose encoder has no exact head, or a fine-tuned encoder without
    a fitted adapter (the head no longer reads its features), gives its plain tags."""
    th = DETECT_THRESHOLD if threshold is None else threshold
    detector = tagger_detector(tagger)
    tf = tagger.encoder.transform()
    dev = next(tagger.parameters()).device
    out: list[list[tuple[str, float]]] = []
    with evaluating(tagger):
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(np.stack([tf(prepare_image(im)).numpy() for im in images[i:i + batch_size]]))
            pooled, grid = tagger.encoder(x.to(dev))
            head = tagger.predict_features(tagger.pool(pooled, grid), top=None)
            dets = detector.detect(pooled, top=10, min_score=th) if detector is not None else [[]] * len(head)
            out += [merge_tags(h, d, top) for h, d in zip(head, dets)]
    return out
