"""Text-to-image generators: pixel, vae and gan (`model.py`) and the scene writer for flat-colour pictures
(`scene.py`), one text encoder (`text.py`), presets by name (`config.py`), losses (`losses.py`), reranking by a
captioner (`rerank.py`), pictures and grids (`images.py`) and the library calls (`api.py`)."""
from img2text2img.models.generator.api import DEFAULT_MODEL_DIR, generate_images, load_generator
from img2text2img.models.generator.config import (
    GENERATORS,
    KINDS,
    DrawSettings,
    GeneratorConfig,
    SceneGeneratorConfig,
    generator_config,
    list_generators,
    load_config,
)
from img2text2img.models.generator.images import make_grid, save_grid, to_pil
from img2text2img.models.generator.losses import GeneratorLoss
from img2text2img.models.generator.model import Drawing, Generator
from img2text2img.models.generator.rerank import RerankedGenerator, reranked
from img2text2img.models.generator.scene import SceneGenerator, SceneTokens
from img2text2img.models.generator.text import MAX_PROMPT_CHARS, PromptWarning, TextEncoder, prepare_prompts


def create_generator(name: str, vocab, **overrides) -> Generator | SceneGenerator:
    """A fresh (untrained) generator from a preset, sized for `vocab`."""
    config = generator_config(name, vocab_size=len(vocab), **overrides)
    return (SceneGenerator if config.kind == "scene" else Generator)(config, vocab=vocab)


__all__ = [
    "DEFAULT_MODEL_DIR", "GENERATORS", "KINDS", "MAX_PROMPT_CHARS", "DrawSettings", "Drawing", "Generator",
    "GeneratorConfig", "GeneratorLoss", "PromptWarning", "RerankedGenerator", "SceneGenerator",
    "SceneGeneratorConfig", "SceneTokens", "TextEncoder", "create_generator", "generate_images", "generator_config",
    "list_generators", "load_config", "load_generator", "make_grid", "prepare_prompts", "reranked", "save_grid",
    "to_pil",
]
