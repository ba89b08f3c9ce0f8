"""Open vocabulary: name what the encoder's ImageNet head sees, in plain caption words.

`words.py` reads the shipped table (ImageNet class -> caption words, built by scripts/make_imagenet_words.py);
`detector.py` turns an encoder's pooled features into calibrated word confidences through the ImageNet head (torch);
`scoring.py` does the same in numpy for the ONNX runtime; `lexical.py` adds DCC's per-word classifiers trained on
Flickr8k photos' labels, for the words a captioner lacks; `tags.py` says which words may be tags and merges the
tag head's words with the detector's. The torch names load on first use, so the runtime can import this package
without torch.
"""
from __future__ import annotations

from img2text2img.openvocab.scoring import has_imagenet_head
from img2text2img.openvocab.words import Detection, WordTable, load_word_table, plural_forms

__all__ = ["Detection", "WordDetector", "WordTable", "fit_platt", "has_imagenet_head", "load_word_table",
           "plural_forms", "word_detector"]
TORCH_NAMES = frozenset({"WordDetector", "fit_platt", "word_detector"})


def __getattr__(name: str):
    if name in TORCH_NAMES:
        from img2text2img.openvocab import detector

        return getattr(detector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
