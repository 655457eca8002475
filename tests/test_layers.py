"""The layer order of DEVELOPING.md, enforced: every import of simgen's own modules points down or
sideways, imports inside functions included, and no two modules import each other in a loop."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "simgen"

#: Lowest first.  A module may import modules of its own rank or lower.
LAYERS = [
    ["simgen", "simgen.__main__", "simgen.errors", "simgen.rng", "simgen.atomic", "simgen.progress",
     "simgen.runtime", "simgen.spread"],
    ["simgen.simulate"],
    ["simgen.augment"],
    ["simgen.datasets"],
    ["simgen.evaluate"],
    ["simgen.train"],
    ["simgen.experiments"],
    ["simgen.commands", "simgen.cli"],
]
# `python -m simgen` runs the CLI: the entry point may sit on top of everything.
ENTRY_POINTS = {"simgen.__main__": len(LAYERS) - 1}


def module_name(path: Path, root: Path = PACKAGE) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def rank(module: str) -> int:
    if module in ENTRY_POINTS:
        return ENTRY_POINTS[module]
    best, best_len = None, -1
    for r, prefixes in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and len(p) > best_len:
                best, best_len = r, len(p)
    if best is None:
        raise AssertionError(f"{module} is in no layer; add it to LAYERS in tests/test_layers.py and DEVELOPING.md")
    return best


def imports_of(path: Path, root: Path = PACKAGE) -> list[tuple[str, int]]:
    """Every simgen module ``path`` imports (anywhere in the file), with its line."""
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out += [(a.name, node.lineno) for a in node.names if a.name.split(".")[0] == "simgen"]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if mod.split(".")[0] != "simgen":
                continue
            for a in node.names:  # `from simgen.train import yolo` imports the submodule
                sub = f"{mod}.{a.name}"
                out.append((sub if (root.parent / (sub.replace(".", "/") + ".py")).exists()
                            or (root.parent / sub.replace(".", "/")).is_dir() else mod, node.lineno))
    return out


def graph() -> dict[str, list[tuple[str, int]]]:
    return {module_name(p): imports_of(p) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_points_down_or_sideways():
    upward = [f"{m}:{line} imports {t} (layer {rank(t)} above {rank(m)})"
              for m, deps in graph().items() for t, line in deps if rank(t) > rank(m)]
    assert not upward, "upward imports:\n" + "\n".join(upward)


def test_no_import_cycles():
    g = {m: sorted({t for t, _ in deps if t != m}) for m, deps in graph().items()}
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in g:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                cycles.append(sorted(comp))

    for v in g:
        if v not in index:
            visit(v)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_the_checker_sees_upward_imports(tmp_path):
    """The test above can fail: an upward import hidden in a function is found."""
    fake = tmp_path / "simgen"
    (fake / "simulate").mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "simulate" / "__init__.py").write_text("")
    (fake / "simulate" / "x.py").write_text("def f():\n    from simgen.train.yolo import trainer\n")
    found = imports_of(fake / "simulate" / "x.py", root=fake)
    assert [m for m, _ in found] == ["simgen.train.yolo"]
    assert rank("simgen.train.yolo") > rank("simgen.simulate.x")


@pytest.mark.parametrize("module", ["simgen.cli", "simgen.commands.train"])
def test_help_does_not_import_heavy_libraries(module):
    """Own modules are imported at the top of files; heavy third-party ones stay lazy (fast ``--help``)."""
    import subprocess
    import sys

    code = (f"import sys, {module}\n"
            "heavy = [m for m in ('torch', 'ultralytics', 'diffusers', 'jax', 'dask', 'matplotlib') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} loads {out.stdout.strip()}"
