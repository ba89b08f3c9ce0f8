"""Terminal output shared by the command modules (not a command itself)."""
from __future__ import annotations

import sys

from rich.console import Console

console = Console()
err_console = Console(stderr=True)


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)


def is_tty() -> bool:
    return sys.stdout.isatty()
