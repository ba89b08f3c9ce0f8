"""Training: one engine (`train.engine.fit`), a `TrainTask` per model family, and each family's recipe dataclass.

Nothing is imported here: the recipe modules are read by the CLI, which must not import torch to show `--help`.
"""
