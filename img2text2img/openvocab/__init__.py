"""Open vocabulary: name what the encoder's ImageNet head sees, in plain caption words.

`words.py` reads the shipped table (ImageNet class -> caption words, built by scripts/make_imagenet_words.py);
`detector.py` turns an encoder's pooled features into calibrated word confidences through the ImageNet head.
"""
from __future__ import annotations

from img2text2img.openvocab.detector import Detection, WordDetector, fit_platt, has_imagenet_head, word_detector
from img2text2img.openvocab.words import WordTable, load_word_table, plural_forms

__all__ = ["Detection", "WordDetector", "WordTable", "fit_platt", "has_imagenet_head", "load_word_table",
           "plural_forms", "word_detector"]
