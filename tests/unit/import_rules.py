"""The import rule of megatron_retro, as a checker: no module import circles, no upward imports.

Packages are layered, highest first (a module may import its own layer or any lower one):

    cli -> commands -> training / evaluation / planning -> peft / retrieval -> models / data
        -> parallel / config (with errors, quiet, io_atomic and the kernels)

"commands" is every module whose name ends in ``commands`` (``peft/commands.py``,
``training/hf_commands.py`` ...): the CLI handlers of each package sit above all library code.
Every import counts, also those inside functions (a lazy import is still a dependency) and under
``if TYPE_CHECKING``.  ``from pkg import name`` depends on ``pkg.name`` when that is a module,
else on ``pkg``.  The checker is plain ``ast`` so a test can run it on a planted package too.
"""
from __future__ import annotations

import ast
import pathlib
from typing import Callable, Dict, Iterable, List, Optional, Set, Tuple

# Highest layer first; a name is a module's first component below the root package.
LAYERS: List[Tuple[str, Set[str]]] = [
    ("cli", {"cli"}),
    ("commands", set()),  # by module name, see layer_of
    ("training/evaluation", {"training", "evaluation", "planning"}),
    ("peft/retrieval", {"peft", "retrieval"}),
    ("models/data", {"models", "data"}),
    ("parallel/config", {"parallel", "config", "errors", "quiet", "io_atomic", "glibc", "kernels", ""}),
]


def layer_of(module: str, root: str = "megatron_retro") -> int:
    """Index into LAYERS (0 = top) of a dotted module name inside ``root``."""
    parts = module.split(".")[1:]
    if parts and parts[-1].endswith("commands"):
        return 1
    first = parts[0] if parts else ""
    for index, (_, names) in enumerate(LAYERS):
        if first in names:
            return index
    raise ValueError(f"{module}: not in any layer of the import rule; add its package to LAYERS")


def module_files(package_dir: pathlib.Path, package: str,
                 extra: Optional[Dict[str, pathlib.Path]] = None) -> Dict[str, pathlib.Path]:
    """Dotted module name -> file for every .py below ``package_dir`` (plus ``extra`` packages
    installed under another folder, name -> directory)."""
    roots = {package: package_dir, **(extra or {})}
    files = {}
    for name, directory in roots.items():
        for path in sorted(directory.rglob("*.py")):
            parts = list(path.relative_to(directory).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([name] + parts)] = path
    return files


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterable[List[str]]:
    """For each import statement, its candidate targets (most specific first)."""
    here = module if is_package else module.rsplit(".", 1)[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield [alias.name]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                yield [f"{source}.{alias.name}", source]


def import_graph(files: Dict[str, pathlib.Path]) -> Dict[str, Set[str]]:
    """Module -> the modules of ``files`` it imports."""
    graph: Dict[str, Set[str]] = {name: set() for name in files}
    for module, path in files.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for candidates in _imported_names(tree, module, path.name == "__init__.py"):
            for name in candidates:
                while name and name not in files and "." in name:
                    name = name.rsplit(".", 1)[0]
                if name in files:
                    if name != module:
                        graph[module].add(name)
                    break
    return graph


def import_cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on_stack: Set[str] = set()
    cycles: List[List[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(cycles)


def upward_imports(graph: Dict[str, Set[str]], layer: Callable[[str], int]) -> List[str]:
    """``"a -> b"`` for every import of a higher layer's module."""
    return sorted(f"{source} -> {target}" for source, targets in graph.items() for target in targets
                  if layer(target) < layer(source))


def violations(files: Dict[str, pathlib.Path], layer: Callable[[str], int]) -> List[str]:
    """Every broken rule, one line each (empty when the package keeps the rule)."""
    graph = import_graph(files)
    found = [f"import circle: {' <-> '.join(cycle)}" for cycle in import_cycles(graph)]
    found += [f"upward import: {edge}" for edge in upward_imports(graph, layer)]
    return found


if __name__ == "__main__":  # python tests/unit/import_rules.py: list what the test would report
    repo = pathlib.Path(__file__).resolve().parents[2]
    project = module_files(repo / "megatron_retro", "megatron_retro",
                           {"megatron_retro.kernels": repo / "kernels"})
    print("\n".join(violations(project, layer_of)) or "clean")
