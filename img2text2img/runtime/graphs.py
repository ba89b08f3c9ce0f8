"""What every runtime model shares: its folder's `onnx/manifest.json`, and ONNX Runtime sessions built the same way.

Why a manifest: the search loops need what the torch model knew (state names, which state is per image, decoding
settings, preprocessing) without importing the torch model code; export writes it beside the graphs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from img2text2img.errors import I2TError

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
THREADS_ENV = "I2T_THREADS"
SHARED = "shared"  # manifest: {graph file: {initializer: model.safetensors key}} (weights stored once, export.py)


def read_manifest(folder: Path) -> dict:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise I2TError(f"{folder}: no {MANIFEST}; export the graphs with scripts/export_runtime.py") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise I2TError(f"{folder / MANIFEST}: not valid JSON; export the graphs again") from None
    if manifest.get("format") != MANIFEST_FORMAT:
        raise I2TError(f"{folder / MANIFEST}: runtime format {manifest.get('format')} is not {MANIFEST_FORMAT}; "
                       "export the graphs again")
    return manifest


def default_threads() -> int:
    """ONNX Runtime threads: `$I2T_THREADS`, else the cores this process may use."""
    env = os.environ.get(THREADS_ENV)
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            raise I2TError(f"{THREADS_ENV} must be a whole number, not {env!r}") from None
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Graph:
    """One ONNX Runtime session; `run(**inputs)` feeds only the inputs the graph declares (the exporter drops
    unused ones) and returns its outputs as a dict of numpy arrays."""

    def __init__(self, path: Path, threads: int | None = None, shared: dict[str, str] | None = None):
        import onnxruntime as ort

        if not path.exists():
            raise I2TError(f"{path} is missing; export the graphs again with scripts/export_runtime.py")
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or default_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: the optimizer's notes are not for users
        # worker threads stop spinning when a run ends: the numpy search between runs needs the cores
        options.add_session_config_entry("session.force_spinning_stop", "1")
        if shared:  # the weights this graph shares with the model folder's safetensors, read from there
            names, values = shared_weights(path.parent.parent / "model.safetensors", shared)
            options.add_external_initializers(names, values)
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line, not ORT's traceback
            first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise I2TError(f"{path}: ONNX Runtime cannot load it ({first}); export the graphs again") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    @classmethod
    def of(cls, folder: Path, manifest: dict, key: str, threads: int | None = None) -> Graph:
        """The manifest's graph `key` in `folder`, with the weights it reads from the model's safetensors file."""
        name = manifest["graphs"][key]
        return cls(folder / name, threads, shared=manifest.get(SHARED, {}).get(name))

    def run(self, **feeds: np.ndarray) -> dict[str, np.ndarray]:
        values = self.session.run(self.outputs, {k: feeds[k] for k in self.inputs})
        return dict(zip(self.outputs, values))


def shared_weights(weights: Path, shared: dict[str, str]) -> tuple[list[str], list]:
    """(initializer names, OrtValues) of the tensors a graph left in the folder's model.safetensors."""
    import onnxruntime as ort
    from safetensors import safe_open

    if not weights.exists():
        raise I2TError(f"{weights} is missing; the runtime graphs read their weights from it")
    names, values = [], []
    with safe_open(str(weights), framework="np") as f:
        for name, key in shared.items():
            try:
                values.append(ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(f.get_tensor(key))))
            except Exception:  # noqa: BLE001 - a key the file lacks: stale graphs
                raise I2TError(f"{weights} has no tensor {key!r}; export the graphs again") from None
            names.append(name)
    return names, values


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Along the last axis, in float32 as torch computes it."""
    x = x.astype(np.float32, copy=False)
    m = x.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0).astype(np.float32)
    with np.errstate(divide="ignore"):
        return (x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))).astype(np.float32)
