"""Training: one engine (`engine.fit`) and a `TrainTask` per model family."""
from img2text2img.train.engine import StepContext, TrainConfig, TrainTask, fit, pick_device, seed_everything

__all__ = ["StepContext", "TrainConfig", "TrainTask", "fit", "pick_device", "seed_everything"]
