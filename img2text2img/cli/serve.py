"""`i2t serve`: the local web page and JSON API (img2text2img/serve/)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app
from img2text2img.cli.output import DeviceOption, console, note, warn
from img2text2img.errors import I2TError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_port_free(host: str, port: int) -> None:
    """A one-line error now for a port already taken, instead of uvicorn's log line after the models loaded."""
    import socket

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise I2TError(f"cannot listen on {host}:{port} ({e.strerror or e}); pick another --port") from None


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on. The default is this machine only; 0.0.0.0 makes "
                                           "the page reachable from the network (there is no login).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="TCP port.")] = 8000,
    data: Annotated[str | None, typer.Option(help="Which shipped models: flickr8k (real photos; the default when "
                                                  "they are installed) or shapes (coloured shapes, no downloads).")
                    ] = None,
    captioner: Annotated[str | None, typer.Option(help="A captioner's name (`i2t models`) or folder.")] = None,
    tagger: Annotated[str | None, typer.Option(help="A tagger's name or folder.")] = None,
    generator: Annotated[str | None, typer.Option(help="A generator's name or folder.")] = None,
    report: Annotated[Path, typer.Option(help="The round-trip report the page links to, when it exists.")
                      ] = Path("runs/roundtrip/report.html"),
    max_batch: Annotated[int, typer.Option(min=1, max=64, help="Caption requests that arrive together run as one "
                                                               "batch of at most this many photos (1: one at a "
                                                               "time; more waiting photos, more throughput).")] = 8,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Serve a web page (drop a photo for its caption, tags and attention; type a sentence for drawings; go around
    the loop) and its JSON API, documented at /docs. Models are loaded once; Ctrl-C stops."""
    try:
        import uvicorn

        from img2text2img.serve.app import create_app
        from img2text2img.serve.models import ServedModels, default_data
    except ImportError as e:
        raise I2TError(f"i2t serve needs its extra ({e.name} is missing): pip install -e \".[serve]\"") from None
    import torch

    if threads:
        torch.set_num_threads(threads)
    if host not in LOOPBACK:
        warn(f"listening on {host}: anyone who can reach this machine on port {port} can use the page and the API "
             "(no login, no TLS)")
    check_port_free(host, port)
    chosen = data or default_data()
    if data is None and chosen == "shapes":
        note("the Flickr8k models are not all installed: serving the shapes models (--data shapes)")
    with console.status("loading models"):
        models = ServedModels.load(captioner, tagger, generator, data=chosen, device=device, max_batch=max_batch)
        models.warm_up()
    names = ", ".join(f"{k} {v}" for k, v in models.names.items())
    shown = f"[{host}]" if ":" in host else ("127.0.0.1" if host == "0.0.0.0" else host)
    console.print(f"{names} on {models.device}")
    console.print(f"serving on [bold]http://{shown}:{port}/[/bold] (API docs at /docs); Ctrl-C stops", highlight=False)
    uvicorn.run(create_app(models, report=report), host=host, port=port, log_level="warning", access_log=False)
