"""`i2t models`: the models shipped in the package, by name (what every --model option accepts)."""
from __future__ import annotations

import json
from typing import Annotated

import typer

from img2text2img.cli import app
from img2text2img.cli.output import console


def human_size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


@app.command("models")
def models_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per model, one per line.")] = False,
) -> None:
    """List the shipped models: name, task, data set, test quality and size. Any --model, --captioner, --generator
    or --rerank-with option takes one of these names (or a model folder); `*` marks the default for each data set."""
    from img2text2img.models.names import model_rows

    rows = model_rows()
    if as_json:
        for r in rows:
            print(json.dumps(r), flush=True)
        return
    table = [("name", "task", "data", "size", "quality (test)")]
    for r in rows:
        size = human_size(r["size_bytes"]) if r["present"] else "missing"
        table.append((r["name"] + (" *" if r["default"] else ""), r["task"], r["data"], size, r["quality"]))
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    for row in table:  # plain aligned columns: readable in a terminal, and when piped or grepped
        console.print("  ".join(c.ljust(w) for c, w in zip(row, widths)) + "  " + row[4], highlight=False)
    console.print("* the default for its task and data set; caption, tag and generate use the flickr8k ones unless "
                  "given --data shapes or --model", highlight=False)
