"""The one exception type users see.

Everything that is the user's fault (a missing file, a bad prompt, a checkpoint of the wrong kind) is raised as
`I2TError` with a one-line message; the CLI prints the message and exits with code 2 instead of a traceback.
"""
from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path


class I2TError(Exception):
    """A user-facing error whose message is one line saying what went wrong and how to fix it."""


class ConfigError(I2TError):
    """A config value of the wrong type or range; whoever knows the file it came from names it in front."""


def run_reporting_errors(entry: Callable[[], int | None]) -> int:
    """Run an entry point (`i2t` or a script under scripts/) and return its exit code, printing user errors as one
    line on stderr instead of a traceback: 2 for bad input or an unwritable output, 130 when interrupted, 141 when
    the reader of a pipe left, 1 for a bug of ours (one line too; `I2T_DEBUG=1` re-raises it). The CLI and the
    scripts share it so that every command a user types fails the same way."""
    try:
        rc = entry()
    except I2TError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `i2t caption DIR | head`: the reader has gone, which is nobody's error
        silence_stdout()
        return 141
    except OSError as e:  # unwritable output, full disk, ...: the OS's reason and the path, on one line
        where = f": {e.filename}" if e.filename else ""
        print(f"error: {e.strerror or e}{where}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use smaller inputs or a smaller --batch-size", file=sys.stderr)
        return 2
    except Exception as e:
        if os.environ.get("I2T_DEBUG"):
            raise
        missing = missing_train_extra(e)
        if missing:  # the base install has no torch: say which extra brings it, not "internal error"
            print(f"error: this needs {missing}, which the base install leaves out: "
                  "pip install 'img2text2img[train]'", file=sys.stderr)
            return 2
        frame = traceback.extract_tb(e.__traceback__)[-1]
        msg = str(e).splitlines()[0][:200] if str(e) else ""
        print(f"error: internal error ({type(e).__name__}{': ' + msg if msg else ''}, at {Path(frame.filename).name}:"
              f"{frame.lineno}); please report it; I2T_DEBUG=1 shows the traceback", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) else 0


# what `pip install img2text2img` leaves out and the `train` extra brings (pyproject.toml)
TRAIN_EXTRA = frozenset({"torch", "torchvision", "timm", "onnx", "nltk"})


def missing_train_extra(e: BaseException) -> str | None:
    """The top-level module of the `train` extra whose absence raised `e`, else None."""
    if isinstance(e, ModuleNotFoundError) and e.name:
        root = e.name.split(".")[0]
        return root if root in TRAIN_EXTRA else None
    return None


def silence_stdout() -> None:
    """Point stdout at /dev/null so that Python's flush at exit does not fail again on the closed pipe."""
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass
