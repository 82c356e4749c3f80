"""The package's shape: no import cycles, imports that only go down the layers, light imports stay light.

Layers, lowest first (a module may import its own layer and the ones below it):
foundation (errors, refs, runtime, files, presets and the tables they read, images, the guidance encoders
and their loaders, weights resolution, untrained stand-ins, metrics) < ``diffusion`` < ``methods`` <
``paired`` < the task layer (``store``, ``api``, ``about``) < ``cli``. Nothing outside ``tiny/`` imports
the tiny world, and the package never imports the benchmarks.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "dit_translate"
FOUNDATION = ("errors", "refs", "knobs", "runtime", "files", "tokenizer", "diffusion.spec", "paired.config", "presets", "colour",
              "images", "sizes", "training", "encoders", "untrained", "weights", "guidance", "metrics", "protocols")
LAYERS = (FOUNDATION, ("diffusion",), ("methods",), ("paired",), ("store", "api", "about"), ("cli", "__main__"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """Project modules imported anywhere in ``tree`` (also inside functions), except under TYPE_CHECKING."""
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return {m for m in found if m in modules or m.split(".")[0] == "benchmarks"}


def import_graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(paths)
    return {m: _imports(ast.parse(p.read_text(encoding="utf-8")), modules) - {m, "dit_translate"}
            for m, p in paths.items()}


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = set()
            while True:
                w = stack.pop()
                group.add(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(group)

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return found


def layer(module: str) -> int | None:
    """The layer of ``dit_translate.X``: an exact entry wins over a package prefix; None for ``tiny``."""
    name = module.removeprefix("dit_translate.")
    for exact in (True, False):
        for i, members in enumerate(LAYERS):
            for member in members:
                if name == member or (not exact and name.startswith(member + ".")):
                    return i
    return None


def test_there_are_no_import_cycles():
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]


def test_imports_go_down_the_layers_and_never_into_the_tiny_world_or_the_benchmarks():
    breaks = []
    for module, deps in import_graph().items():
        if module == "dit_translate" or module.startswith("dit_translate.tiny"):
            continue  # the lazy public API imports by name on first use; tiny/ is above everything
        mine = layer(module)
        assert mine is not None, f"{module} belongs to no layer; add it to LAYERS"
        for dep in deps:
            if dep.startswith(("dit_translate.tiny", "benchmarks")):
                breaks.append(f"{module} imports {dep}")
            elif layer(dep) > mine:
                breaks.append(f"{module} (layer {mine}) imports {dep} (layer {layer(dep)})")
    assert breaks == []


def test_reading_presets_and_the_cli_help_load_no_model_code():
    code = ("import sys, dit_translate.presets, dit_translate.cli; dit_translate.presets.list_presets(); "
            "print(sorted({'torch', 'diffusers', 'transformers', 'open_clip'} & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_the_public_api_is_lazy_and_complete():
    import dit_translate

    for name in dit_translate.__all__:
        assert callable(getattr(dit_translate, name)) or isinstance(getattr(dit_translate, name), type)


def test_docs_methods_cites_files_and_lines_that_exist():
    import re

    text = (ROOT / "docs" / "methods.md").read_text(encoding="utf-8")
    cited = re.findall(r"`((?:dit_translate|presets|tests)/[\w/.-]+\.(?:py|toml)):(\d+)", text)
    assert len(cited) > 50
    missing = [f"{path}:{line}" for path, line in cited
               if not (ROOT / path).is_file() or int(line) > len((ROOT / path).read_text().splitlines())]
    assert missing == []
