"""Terminal output shared by the command modules (not a command itself)."""
from __future__ import annotations

import sys

from rich.console import Console

# soft_wrap: long lines (file paths, captions, error listings) are never cut into pieces when piped or logged.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)


def is_tty() -> bool:
    return sys.stdout.isatty()
