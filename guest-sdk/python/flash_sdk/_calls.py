"""What each function of the app's sources mentions, for `flash build`'s peer-call check.

`flash build` gives the API key (which peer calls need) only to resource configs whose
functions may call a function of another config. It decides that from this scan, read
without importing anything: for every function and method of every module, the names its
body mentions (identifiers, attributes, string constants) and whether it calls `peer_call`
with a name that is not a string literal. Module- and class-level assignments and
`import ... as` aliases are nodes too, so that `fast = embed` then `fast(...)` still links
to `embed`. The build follows these links from each Flash function (see
`flash_manifest::peer_calls`): it only ever adds calls, so what the scan cannot see makes a
config get the key rather than lose it.

Output: `{"functions": {name: {"names": [...], "computed_peer_call": bool}}}`.
"""

from __future__ import annotations

import ast
import os
from typing import Any

#: Functions that call a Flash function by the name given as their first argument.
PEER_CALLS = frozenset({"peer_call", "call_by_name"})

#: Folders never scanned (as the build never stages them).
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules", "target", "venv", "env"})


class _Scanner(ast.NodeVisitor):
    def __init__(self, graph: dict[str, dict[str, Any]]) -> None:
        self.graph = graph
        # The nodes that what is visited now counts for (innermost last).
        self.owners: list[str] = []

    def _node(self, name: str) -> dict[str, Any]:
        return self.graph.setdefault(name, {"names": set(), "computed_peer_call": False})

    def _mention(self, name: str) -> None:
        if self.owners:
            self._node(self.owners[-1])["names"].add(name)

    def _within(self, owner: str, nodes: list[ast.AST]) -> None:
        self._node(owner)
        self.owners.append(owner)
        for node in nodes:
            self.visit(node)
        self.owners.pop()

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        # The enclosing function (if any) mentions its nested function by name.
        self._mention(node.name)
        self._within(
            node.name,
            [*node.decorator_list, node.args, *node.body]
            + ([node.returns] if node.returns else []),
        )

    visit_AsyncFunctionDef = visit_FunctionDef  # type: ignore[assignment]

    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        # Using a class may run any of its methods (`Model()` runs `__init__`): the class
        # is a node that mentions them all.
        self._mention(node.name)
        methods = [
            n.name for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
        ]
        self._node(node.name)["names"].update(methods)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign | ast.AnnAssign) -> None:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target]
        names = [t.id for t in targets if isinstance(t, ast.Name)]
        if self.owners or not names or node.value is None:
            self.generic_visit(node)
            return
        # `alias = embed` at module or class level: `alias` is a node that mentions `embed`.
        for name in names:
            self._within(name, [node.value])

    visit_AnnAssign = visit_Assign  # type: ignore[assignment]

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        for alias in node.names:
            if alias.asname and alias.asname != alias.name:
                if self.owners:
                    self._mention(alias.name)
                else:
                    self._node(alias.asname)["names"].add(alias.name)

    def visit_Name(self, node: ast.Name) -> None:
        self._mention(node.id)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        self._mention(node.attr)
        self.generic_visit(node)

    def visit_Constant(self, node: ast.Constant) -> None:
        if isinstance(node.value, str) and node.value.isidentifier():
            self._mention(node.value)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        called = (
            func.id if isinstance(func, ast.Name)
            else func.attr if isinstance(func, ast.Attribute)
            else None
        )
        if called in PEER_CALLS and self.owners:
            first = node.args[0] if node.args else None
            if first is None or isinstance(first, ast.Starred) or not (
                isinstance(first, ast.Constant) and isinstance(first.value, str)
            ):
                self._node(self.owners[-1])["computed_peer_call"] = True
        self.generic_visit(node)


def scan_source(source: str, graph: dict[str, dict[str, Any]], filename: str = "<app>") -> None:
    """Adds what the functions of one module's `source` mention to `graph`."""
    _Scanner(graph).visit(ast.parse(source, filename=filename))


def scan_tree(root: str) -> dict[str, Any]:
    """The scan of every `.py` file under `root` (a file that does not parse is an error)."""
    graph: dict[str, dict[str, Any]] = {}
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for file in sorted(files):
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                with open(path, encoding="utf-8") as f:
                    scan_source(f.read(), graph, filename=path)
    return {
        "functions": {
            name: {"names": sorted(node["names"]), "computed_peer_call": node["computed_peer_call"]}
            for name, node in sorted(graph.items())
        }
    }
