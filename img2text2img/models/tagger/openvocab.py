"""Open-vocabulary tags on torch: the Flickr8k tag head's words merged with the words the encoder's ImageNet head
names (openvocab/tags.py says which words may be tags and how the two lists merge)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from img2text2img.data.images import prepare_image
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.openvocab import has_imagenet_head
from img2text2img.openvocab.detector import detector_for_encoder
from img2text2img.openvocab.tags import DETECT_THRESHOLD, merge_tags


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

    def __call__(self, images: Sequence, top: int | None = 10, batch_size: int = 32, beam: int | None = None,
                 tag_threshold: float | None = None) -> list[list[tuple[str, float]]]:
        return tag_open_vocab(self.tagger, images, top=top, batch_size=batch_size, beam=beam,
                              tag_threshold=tag_threshold)


@torch.no_grad()
def tag_open_vocab(tagger, images: Sequence, top: int | None = 10, batch_size: int = 32,
                   threshold: float | None = None, beam: int | None = None,
                   tag_threshold: float | None = None) -> list[list[tuple[str, float]]]:
    """Tag PIL images with `tagger` and its encoder's ImageNet head. Detected words need a calibrated score of
    `threshold` (None: DETECT_THRESHOLD); `beam` and `tag_threshold` are the tag head's own (None: its settings); a
    tagger whose encoder has no exact head, or a fine-tuned encoder without
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
            head = tagger.predict_features(tagger.pool(pooled, grid), top=None, beam=beam, threshold=tag_threshold)
            dets = detector.detect(pooled, top=10, min_score=th) if detector is not None else [[]] * len(head)
            out += [merge_tags(h, d, top) for h, d in zip(head, dets)]
    return out
