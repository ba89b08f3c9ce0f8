"""A torch-free inference runtime: ONNX Runtime graphs exported once per model (`export.py`, which needs torch) and
the searches in numpy, so a process that only captions, tags or draws starts in a fraction of `import torch`.

    from img2text2img.runtime import load_runtime
    cap = load_runtime("img2text2img/pretrained/captioner")   # reads its onnx/ folder
    cap.caption_images([pil_image])                            # same captions as the torch Captioner

Nothing here imports torch, torchvision or timm at module level; `export.py` imports torch inside its functions.
"""
from __future__ import annotations

from img2text2img.runtime.load import RUNTIME_DIR, has_runtime, load_runtime, runtime_dir

__all__ = ["RUNTIME_DIR", "has_runtime", "load_runtime", "runtime_dir"]
