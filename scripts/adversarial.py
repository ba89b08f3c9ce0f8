"""A scripted red-team pass (issue #16): bad images, bad folders, bad options, bad model folders and simulated full
disks against the `i2t` CLI and the Python API, each checked for what docs/ERRORS.md promises: bad input is refused
with a non-zero exit and one `error:` line, never a traceback, never an exit 0, and no file that was there is lost.

    python scripts/adversarial.py --out adversarial.json          # every case (a minute or two on one core)
    python scripts/adversarial.py --out a.json --only image       # the cases whose name or group contains "image"

Commands run in this process (`img2text2img.cli.main`), so a traceback is an exception escaping `main` or the
"internal error" line `main` prints for one; models are tiny and untrained (error handling does not depend on
weights). Exit code 0 when every case passed, 1 otherwise.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import resource
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # scripts/ is not a package
from adversarial_cases import (
    Case,
    Suite,
    add_data_cases,
    add_disk_cases,
    add_image_cases,
    add_model_cases,
    add_option_cases,
    add_output_cases,
    build_models,
)

SLOW_S = 15.0  # a case slower than this counts as a stall
MEMORY_MB = 600  # a case raising the peak resident memory by more than this counts as a blow-up


def snapshot(paths: tuple[Path, ...]) -> dict[str, str]:
    out = {}
    for p in paths:
        files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p] if p.exists() else []
        if not files:
            out[str(p)] = "absent" if not p.exists() else "empty"
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: Case) -> dict:
    before = snapshot(case.keep)
    out, err = io.StringIO(), io.StringIO()
    rss0, t0, escaped = rss_mb(), time.perf_counter(), None
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in case.patches]
    try:
        for obj, attr, new in case.patches:
            setattr(obj, attr, new)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = case.run()
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException as e:  # noqa: BLE001 - the very thing this suite looks for
        rc, escaped = None, "".join(traceback.format_exception_only(type(e), e)).strip()
    finally:
        for obj, attr, old in saved:
            setattr(obj, attr, old)
    seconds = time.perf_counter() - t0
    text = err.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    problems = []
    if escaped or "Traceback (most recent call last)" in text or "error: internal error" in text:
        problems.append("traceback")
    elif case.bad and rc == 0:
        problems.append("exit0")
    elif not case.bad and rc != 0:
        problems.append("good input refused")
    elif case.bad:
        usage = any("Usage:" in ln or "Invalid value" in ln or "No such option" in ln or "Missing" in ln
                    for ln in lines)
        if not usage and not (lines and lines[-1].startswith("error:")):
            problems.append("no error line")
    lost = [k for k, v in before.items() if snapshot((Path(k),)).get(k) != v]
    if lost:
        problems.append("lost files")
    if case.check is not None and not escaped:
        why = case.check()
        if why:
            problems.append(why)
    if seconds > SLOW_S:
        problems.append("slow")
    grew = rss_mb() - rss0
    if grew > MEMORY_MB:
        problems.append("memory")
    last = escaped or (lines[-1] if lines else "")
    return {"name": case.name, "group": case.group, "bad_input": case.bad, "exit": rc, "ok": not problems,
            "problems": problems, "lost": lost, "seconds": round(seconds, 2), "peak_rss_growth_mb": round(grew),
            "message": last[:300], "multi_line_error": case.bad and len(lines) > 1 and not lines[0].startswith("failed")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, type=Path, help="JSON report to write.")
    p.add_argument("--only", default="", help="Run only cases whose name or group contains this.")
    p.add_argument("--keep", action="store_true", help="Keep the scratch folder (printed at the end).")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="i2t-adversarial-"))
    try:
        suite = Suite(root)
        models = build_models(root / "models")
        add_image_cases(suite, models)
        add_option_cases(suite, models)
        add_model_cases(suite, models)
        add_output_cases(suite, models)
        add_disk_cases(suite, models)
        add_data_cases(suite)
        cases = [c for c in suite.cases if args.only in c.name or args.only in c.group]
        results = []
        for i, case in enumerate(cases, 1):
            r = run_case(case) if case.bad is not None else run_tolerant(case)
            results.append(r)
            mark = "ok  " if r["ok"] else "FAIL"
            print(f"[{i:3d}/{len(cases)}] {mark} {case.name}: exit {r['exit']} {r['message'][:110]}", flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    bad_cases = [r for r in results if r["bad_input"]]
    summary = {
        "cases": len(results),
        "bad_input_cases": len(bad_cases),
        "passed": sum(r["ok"] for r in results),
        "tracebacks": sum("traceback" in r["problems"] for r in results),
        "exit0_on_bad_input": sum("exit0" in r["problems"] for r in results),
        "lost_files": sum("lost files" in r["problems"] for r in results),
        "good_input_refused": sum("good input refused" in r["problems"] for r in results),
        "slow": sum("slow" in r["problems"] for r in results),
        "memory_blowups": sum("memory" in r["problems"] for r in results),
        "max_seconds": max((r["seconds"] for r in results), default=0),
        "peak_rss_mb": round(rss_mb()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "results": results}, indent=2) + "\n", encoding="utf-8")
    print(json.dumps(summary, indent=2))
    if args.keep:
        print(f"scratch folder: {root}")
    return 0 if summary["passed"] == len(results) else 1


def run_tolerant(case: Case) -> dict:
    """A case whose input may or may not be usable (a fuzzed file): it must give a result or one error, no more."""
    case.bad = True
    r = run_case(case)
    r["bad_input"] = None
    r["problems"] = [p for p in r["problems"] if p != "exit0"]
    r["ok"] = not r["problems"]
    return r


if __name__ == "__main__":
    sys.exit(main())
