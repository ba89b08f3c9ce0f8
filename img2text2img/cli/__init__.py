"""The `i2t` command: a thin shell over the library. Each command module only parses arguments, calls the library and
prints; user errors (`I2TError`) become one line on stderr and exit code 2."""
from __future__ import annotations

import sys
import warnings

import typer

from img2text2img.cli.output import COMMAND_LINE
from img2text2img.errors import run_reporting_errors

app = typer.Typer(
    name="i2t",
    help="img2text2img: caption and tag photos, draw pictures from sentences, and score the round trip.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(help="Make or inspect datasets.", no_args_is_help=True)
train_app = typer.Typer(help="Train a captioner, tagger or generator.", no_args_is_help=True)
eval_app = typer.Typer(help="Score a trained model on a dataset split.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(eval_app, name="eval")


def _register_commands() -> None:
    # Each module adds its commands to the apps above; importing them is cheap (no torch at import).
    import importlib
    import pkgutil

    import img2text2img.cli as pkg

    for mod in sorted(m.name for m in pkgutil.iter_modules(pkg.__path__)):
        importlib.import_module(f"img2text2img.cli.{mod}")


def _click_exception_types() -> tuple[type, ...]:
    # Newer typer vendors click as `typer._click`; older ones use click itself. Usage errors may come from either.
    types: list[type] = []
    for mod in ("typer._click.exceptions", "click.exceptions"):
        try:
            types.append(__import__(mod, fromlist=["ClickException"]).ClickException)
        except ImportError:
            pass
    return tuple(types)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (0 ok, 2 bad input or usage, 130 interrupted)."""
    _register_commands()
    return run_reporting_errors(lambda: _run_app(list(sys.argv[1:] if argv is None else argv)))


def _one_line_warnings(default):
    """The library's own warnings (bad data left out, odd prompts) as one line for the user, not a source line."""
    def show(message, category, filename, lineno, file=None, line=None):
        if category.__module__.startswith("img2text2img"):
            print(f"warning: {message}", file=sys.stderr)
        else:
            default(message, category, filename, lineno, file, line)
    return show


def _run_app(args: list[str]) -> int:
    """typer/click's own exits and usage errors as exit codes (the user errors are left to run_reporting_errors)."""
    token = COMMAND_LINE.set(args)  # training runs record the command that made them (write_run_summary)
    try:
        with warnings.catch_warnings():  # restored afterwards: main() may run inside a longer process
            warnings.showwarning = _one_line_warnings(warnings.showwarning)
            rc = app(args=args, standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.Abort:
        print("interrupted", file=sys.stderr)
        return 130
    except _click_exception_types() as e:  # bad option values, unknown commands: click's own one-line usage error
        e.show()
        return e.exit_code
    finally:
        COMMAND_LINE.reset(token)
    return rc if isinstance(rc, int) else 0


def run() -> None:
    sys.exit(main())
