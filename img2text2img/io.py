"""Atomic writes and file hashing: the small I/O layer every module may import (it imports only `errors`).

A file or folder is written beside its target and renamed into place, so a crash or a kill leaves the previous
version or the new one, never half of either. A write that fails (full disk, no permission) is one `I2TError`
naming the target, and the temporary copy goes; temporary folders a kill left behind go on the next write of the
same target.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from img2text2img.errors import I2TError


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_error(path: str | Path, e: BaseException) -> I2TError:
    """A failed write as one line naming the target: the OS's reason (full disk, permission) or the writer's."""
    reason = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    os_message = re.search(r'message: "([^"]+)"', reason)  # safetensors wraps the OS error in Rust debug text
    return I2TError(f"cannot write {path}: {os_message.group(1) if os_message else reason}")


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    if path.is_dir():
        raise I2TError(f"cannot write {path}: it is a folder")
    if path.exists() and not path.is_file():
        # a device or a pipe (/dev/stdout, a FIFO): written into, never renamed over, which would replace the node
        try:
            with open(path, "wb") as f:
                f.write(data)
                f.flush()
        except OSError as e:
            raise write_error(path, e) from None
        return
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise write_error(path, e) from None
    try:
        os.chmod(tmp, 0o666 & ~umask())  # mkstemp makes 0600 files; outputs should have normal permissions
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise write_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file through a temp file + rename so readers never see half of it."""
    write_bytes_atomic(path, text.encode("utf-8"))


def backup_of(path: str | Path) -> Path:
    """Where `swap_into_place` keeps the previous folder during a swap (hidden, so no user folder is named so)."""
    path = Path(path)
    return path.with_name(f".{path.name}.old")


def legacy_backup_of(path: str | Path) -> Path:
    """The backup name releases before this one used (`NAME.old`): still read after an interrupted swap, never
    deleted, since a user may keep a folder of that name."""
    path = Path(path)
    return path.with_name(path.name + ".old")


def leftover_temp_folders(path: str | Path) -> list[Path]:
    """Temporary folders `atomic_folder(path)` made and a kill left behind (mkdtemp's names, 8 random characters)."""
    path = Path(path)
    pattern = re.compile(rf"\.{re.escape(path.name)}\.tmp[A-Za-z0-9_]{{8}}")
    try:
        return [p for p in path.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink()]
    except OSError:
        return []


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a temp folder beside `path` to fill; when the block ends it replaces `path` in one swap, and when the
    block fails (or is interrupted) it is removed, so `path` is never a half-written folder. An OSError (full disk,
    no permission) while filling or swapping becomes one `I2TError` naming `path`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in leftover_temp_folders(path):
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp"))
    except OSError as e:
        raise write_error(path, e) from None
    try:
        yield tmp
        # mkdtemp makes a 0700 folder; give the finished folder and its files the usual permissions
        mask = umask()
        os.chmod(tmp, 0o777 & ~mask)
        for f in tmp.rglob("*"):
            os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)
        swap_into_place(tmp, path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise write_error(path, e) from None
    except I2TError as e:  # a write inside the block failed: name the target, not the temporary folder
        shutil.rmtree(tmp, ignore_errors=True)
        raise I2TError(str(e).replace(str(tmp), str(path))) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def swap_into_place(tmp: Path, path: Path) -> None:
    """Replace `path` by `tmp` so that at every instant one complete folder exists (at `path` or its backup)."""
    old = backup_of(path)
    if old.exists():
        if path.exists():  # a kill after the last swap's second rename: the backup is stale
            shutil.rmtree(old)
        else:  # a kill between the renames: the backup is the only copy until the new one is in place
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
            return
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
