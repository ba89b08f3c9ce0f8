"""img2text2img: caption and tag photos, draw pictures from sentences, and check both by going around the loop.

Heavy modules (torch, models) are imported when first used, so `import img2text2img` and `i2t --help` stay fast.
"""
from __future__ import annotations

from img2text2img.version import __version__

__all__ = ["__version__", "caption", "generate", "load_model", "shipped_models", "tag"]


def __getattr__(name: str):
    # Lazy top-level API: `img2text2img.caption(...)` etc. without importing torch at package import.
    if name in ("caption", "tag", "generate", "load_model", "shipped_models"):
        from img2text2img import api

        return getattr(api, name)
    raise AttributeError(name)
