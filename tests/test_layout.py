"""The package's layout: no import circle among its modules, and each room imports only what
its __init__ says it may ("May import: ..."). Also a command anyone can run:

    python tests/test_layout.py     # prints the rooms' imports, exits 1 on a circle or a breach
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "reana_log_sse"
NAME = "reana_log_sse"
# the shared modules at the top, and what each may import (the rooms say theirs)
TOP = {
    "settings": set(), "metrics": set(), "auth": {"settings"}, "params": {"store"},
    "server": {"settings"}, "ship": set(),  # ship.py: one standard-library file
    "bodies": set(),  # a request body read within its caps (ingest and reana read with it)
    "redact": set(),  # redact.py: log redaction, standard library only
    "openapi": {"ingest"},  # the interface document: StatusUpdate's schema
}
ANYTHING = {"app", "cli", "demo", "__main__", "__init__", "bench"}  # the composers


def modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((NAME, *parts))] = path
    return found


def imports(path: Path, name: str, known: dict[str, Path]) -> set[str]:
    """Every module of the package that `path` imports: at the top, inside functions and
    under TYPE_CHECKING alike."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith(NAME))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module != NAME and not module.startswith(NAME + "."):
                continue
            for alias in node.names:
                sub = f"{module}.{alias.name}"
                out.add(sub if sub in known else module)
    out.discard(name)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, name, known) for name, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def allowed() -> dict[str, set[str] | None]:
    """Room -> the rooms it may import (None: anything), from each room's __init__."""
    rules: dict[str, set[str] | None] = {r: set(v) for r, v in TOP.items()}
    rules.update({r: None for r in ANYTHING})
    for init in sorted(PACKAGE.glob("*/__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text(encoding="utf-8"))) or ""
        match = re.search(r"^May import: (.*?)\.$", doc, re.MULTILINE)
        assert match, f"{init}: its docstring has no 'May import: ...' line"
        said = match.group(1).strip()
        rules[init.parent.name] = (None if said.startswith("anything") else set() if
                                   said.startswith("nothing") else
                                   {w.strip() for w in said.split(",")})
    return rules


def breaches(edges: dict[str, set[str]]) -> list[str]:
    rules = allowed()
    found = []
    for source, targets in sorted(edges.items()):
        mine = room(source)
        may = rules.get(mine, set())
        for target in sorted(targets):
            theirs = room(target)
            if theirs != mine and may is not None and theirs not in may:
                found.append(f"{source} imports {target}: {mine} may import "
                             f"{', '.join(sorted(may)) or 'nothing of the package'}")
    return found


def test_layout_has_no_import_circle() -> None:
    edges = graph()
    assert len(edges) > 40  # the walk found the package
    assert circles(edges) == []


def test_layout_rooms_import_only_what_they_say() -> None:
    assert breaches(graph()) == []


def test_layout_finds_a_circle_and_a_breach() -> None:
    """The checks themselves can fail: a circle and a room reaching up are both caught."""
    edges = graph()
    edges["reana_log_sse.store.db"] = edges["reana_log_sse.store.db"] | {
        "reana_log_sse.follow.hub"}
    assert any("reana_log_sse.store.db" in c for c in circles(edges))
    assert any(b.startswith("reana_log_sse.store.db imports reana_log_sse.follow.hub")
               for b in breaches(edges))


def test_layout_ship_imports_only_the_standard_library() -> None:
    tree = ast.parse((PACKAGE / "ship.py").read_text(encoding="utf-8"))
    names = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
             for a in n.names}
    names |= {n.module.split(".")[0] for n in ast.walk(tree)
              if isinstance(n, ast.ImportFrom) and n.module and not n.level}
    assert names <= set(sys.stdlib_module_names) | {"__future__"}, names


if __name__ == "__main__":
    edges = graph()
    by_room: dict[str, set[str]] = {}
    for source, targets in edges.items():
        by_room.setdefault(room(source), set()).update(
            room(t) for t in targets if room(t) != room(source))
    for name in sorted(by_room):
        print(f"{name:12} -> {', '.join(sorted(by_room[name])) or '-'}")
    found = circles(edges)
    bad = breaches(edges)
    for c in found:
        print("circle:", " -> ".join(c))
    for b in bad:
        print("breach:", b)
    print(f"{len(edges)} modules, {len(found)} circles, {len(bad)} breaches")
    sys.exit(1 if found or bad else 0)


def test_layout_service_imports_no_kubernetes_client_until_its_link_starts() -> None:
    """kubernetes-asyncio's generated client costs a process about 64 MB (a fresh service
    started at 108 MB RSS with it, 59-71 MB before it came): the app and the CLI import it
    only where the Kubernetes link starts (kubernetes/link.py)."""
    import subprocess

    code = ("import sys, reana_log_sse.app, reana_log_sse.cli, reana_log_sse.demo; "
            "print(sorted(m for m in sys.modules if m.startswith('kubernetes_asyncio')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]", out
