"""The package keeps the layout it was cut to: small modules, no import cycles, layers that import downwards only,
and no private name borrowed from another module."""
from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "img2text2img"
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    mods = {}
    for f in PKG.rglob("*.py"):
        parts = f.relative_to(PKG.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        mods[name] = f
    return mods


def _imports(mods: dict[str, Path]) -> dict[str, list[tuple[str, str]]]:
    """module -> [(imported module, imported name)] for every import of the package, function-local ones too."""
    out: dict[str, list[tuple[str, str]]] = {}
    for name, f in mods.items():
        found = []
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("img2text2img"):
                for a in node.names:
                    target = f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in mods else node.module
                    found.append((target, a.name))
            elif isinstance(node, ast.Import):
                found += [(a.name, "") for a in node.names if a.name.startswith("img2text2img")]
        out[name] = found
    return out


def test_every_module_is_at_most_600_lines():
    long = {str(f.relative_to(PKG)): n for f in PKG.rglob("*.py")
            if (n := len(f.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long


def test_no_import_cycles():
    mods = _modules()
    graph = {m: {t for t, _ in deps if t in mods and t != m} for m, deps in _imports(mods).items()}
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            # importing a submodule runs its package's __init__, which is not an edge back
            if m.startswith(t + "."):
                continue
            assert state.get(t) != 1, "import cycle: " + " -> ".join(path[path.index(t):] + [t])
            if t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_models_never_import_training_or_the_cli():
    bad = [(m, t) for m, deps in _imports(_modules()).items() if m.startswith("img2text2img.models")
           for t, _ in deps if t.startswith(("img2text2img.train", "img2text2img.cli"))]
    assert not bad


def test_no_private_name_is_imported_across_modules():
    bad = [(m, t, n) for m, deps in _imports(_modules()).items() for t, n in deps
           if n.startswith("_") and not (n.startswith("__") and n.endswith("__"))]
    assert not bad
