"""The package's shape: no import cycles between its modules, and each subpackage imports only
the parts its docstring allows. Every import counts: at the top of a module, inside a function
(a lazy import), and under ``TYPE_CHECKING``."""

import ast
import re
import subprocess
import sys
from pathlib import Path

import en_analysis

PACKAGE = Path(en_analysis.__file__).parent
NAME = "en_analysis"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Every module of the package: its dotted name -> (file, whether it is a package)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if package else parts)] = (path, package)
    return out


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (anywhere in its code)."""
    modules = _modules()
    graph = {}
    for name, (path, package) in modules.items():
        here = name if package else name.rpartition(".")[0]
        targets = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets |= {a.name for a in node.names if a.name.split(".")[0] == NAME}
            elif isinstance(node, ast.ImportFrom):
                base = (
                    here.split(".")[: len(here.split(".")) - node.level + 1] if node.level else []
                )
                module = ".".join([*base, *([node.module] if node.module else [])])
                if module.split(".")[0] == NAME:
                    # ``from . import plotting`` imports a module; ``from .x import f`` imports x
                    targets |= {
                        f"{module}.{a.name}" if f"{module}.{a.name}" in modules else module
                        for a in node.names
                    }
        graph[name] = {t for t in targets if t in modules and t != name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while not component or component[-1] != v:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def part(module: str) -> str | None:
    """The subpackage a module belongs to (None: the package's own ``__init__``/``__main__``)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (PACKAGE / parts[-1]).is_dir() else None


def allowed(subpackage: str) -> set[str]:
    """The parts a subpackage may import, as its ``__init__`` docstring names them: the
    ``name``s of its sentence "It may import ..."."""
    doc = ast.get_docstring(ast.parse((PACKAGE / subpackage / "__init__.py").read_text()))
    sentence = re.search(r"may\s+import\s(.*?)\.(\s|$)", doc, re.S)
    assert sentence, f"{subpackage}/__init__.py does not say what it may import"
    return set(re.findall(r"``(\w+)``", sentence.group(1)))


def subpackages() -> list[str]:
    return sorted(p.parent.name for p in PACKAGE.glob("*/__init__.py"))


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_each_part_imports_only_what_its_docstring_allows():
    upward = [
        f"{module} imports {target}"
        for module, targets in import_graph().items()
        for target in sorted(targets)
        if part(module) is not None
        and part(target) not in (None, part(module))
        and part(target) not in allowed(part(module))
    ]
    assert upward == []


def test_every_part_is_allowed_only_parts_that_exist():
    parts = set(subpackages())
    assert {p: allowed(p) - parts for p in parts} == {p: set() for p in parts}


def test_the_parser_builds_without_torch_pandas_or_sklearn():
    """``en-analysis --help`` and every step's declaration stay cheap to import."""
    script = (
        "import sys\n"
        "from en_analysis.cli import build_parser\n"
        "build_parser().format_help()\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'pandas', 'sklearn'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
