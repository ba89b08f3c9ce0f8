"""The CLI shell: help lists the commands, user errors are one line with exit code 2, README and CI agree."""
from __future__ import annotations

import re
from pathlib import Path

from typer.testing import CliRunner

from img2text2img.cli import _register_commands, app, main

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_commands():
    _register_commands()
    out = CliRunner().invoke(app, ["--help"]).output
    for cmd in ("data", "train", "eval", "models", "caption", "tag", "generate"):
        assert cmd in out


def test_data_shapes_and_refuse_overwrite(tmp_path, capsys):
    assert main(["data", "shapes", "--out", str(tmp_path / "s"), "--n", "12"]) == 0
    assert len(list((tmp_path / "s" / "images").iterdir())) == 12
    assert main(["data", "shapes", "--out", str(tmp_path / "s"), "--n", "12"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--force" in err and err.count("\n") == 1
    assert main(["data", "shapes", "--out", str(tmp_path / "s"), "--n", "6", "--force"]) == 0
    assert len(list((tmp_path / "s" / "images").iterdir())) == 6
    # a folder it did not write is never replaced, --force or not (it would be deleted)
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "notes.txt").write_text("keep me")
    assert main(["data", "shapes", "--out", str(tmp_path / "home"), "--n", "6", "--force"]) == 2
    assert (tmp_path / "home" / "notes.txt").read_text() == "keep me"
    assert main(["data", "shapes", "--out", str(tmp_path / "home" / "notes.txt"), "--n", "6", "--force"]) == 2


def test_unknown_dataset_exit_2(capsys):
    assert main(["data", "info", "no-such-dataset"]) == 2
    assert "not found" in capsys.readouterr().err


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.DOTALL).group(1).strip().splitlines()
    assert len(block) == 2
    test_cmd = block[1].split("&&")[-1].strip()
    assert test_cmd in (ROOT / ".ci" / "run").read_text()


def test_usage_errors_exit_2_without_traceback(capsys):
    assert main(["data", "shapes", "--out", "x", "--n", "abc"]) == 2
    assert main(["no-such-command"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "Invalid value for '--n'" in err and "No such command" in err
