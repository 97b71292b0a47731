"""The hub's layering (issue 17), checked on the source: no import cycle among server modules (deferred and
type-checking imports counted), the core imports no feature, the backplane only the core's peer messages, imports
are not deferred to dodge a cycle, server and clients stay apart, the Hub stays small, and handlers take typed
bodies instead of asserting them."""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from pathlib import Path

from server.store import Store, interfaces

ROOT = Path(__file__).resolve().parents[2]
SERVER = ROOT / "server"
# Optional backends, imported only when configured (a hub without Redis never loads the client).
DEFERRED_ALLOWED = {
    ("server.app", "server.backplane.redis"),
    ("server.app", "server.redis_url"),
    ("server.app", "server.store.redis"),
}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources(folder: Path) -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(folder.rglob("*.py")):
        yield module_name(path), ast.parse(path.read_text(), str(path))


SERVER_MODULES = dict(sources(SERVER))


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def imports(tree: ast.Module) -> Iterator[tuple[str, int, bool]]:
    """(module imported, line, deferred: inside a function or an ``if``) for every import naming a module."""

    def walk(node: ast.AST, deferred: bool) -> Iterator[tuple[str, int, bool]]:
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.If)
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield alias.name, child.lineno, deferred
            elif isinstance(child, ast.ImportFrom) and child.module and child.level == 0:
                yield child.module, child.lineno, deferred
                for alias in child.names:  # ``from server.features import kv`` imports a module
                    if is_module(f"{child.module}.{alias.name}"):
                        yield f"{child.module}.{alias.name}", child.lineno, deferred
            else:
                yield from walk(child, inner)

    yield from walk(tree, False)


def server_edges() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {name: set() for name in SERVER_MODULES}
    for name, tree in SERVER_MODULES.items():
        for target, _, _ in imports(tree):
            if target in SERVER_MODULES and target != name:
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_server_modules_import_each_other_without_a_cycle() -> None:
    assert cycles(server_edges()) == []


def test_the_core_imports_no_feature_and_no_transport() -> None:
    wrong = [
        f"{name} imports {target}"
        for name, tree in SERVER_MODULES.items()
        if name.startswith("server.core")
        for target, _, _ in imports(tree)
        if target.startswith("server.")
        and not target.startswith(("server.core", "server.store", "server.backplane"))
        and target not in ("server.settings", "server.guard", "server.uploads")
    ]
    assert wrong == []


def test_the_backplane_takes_of_the_core_only_the_peer_messages_which_import_nothing_of_the_server() -> None:
    """The backplane sits below the core but carries its typed messages: ``server.core.peers`` stays a leaf, so
    decoding them never pulls the hub into the backplane."""
    wrong = [
        f"{name} imports {target}"
        for name, tree in SERVER_MODULES.items()
        if name.startswith("server.backplane")
        for target, _, _ in imports(tree)
        if target.startswith("server.core") and target not in ("server.core", "server.core.peers")
    ]
    wrong += [
        f"server.core.peers imports {target}"
        for target, _, _ in imports(SERVER_MODULES["server.core.peers"])
        if target.split(".")[0] in ("server", "clients", "provisioning")
    ]
    assert wrong == []


def test_features_import_only_the_core_the_store_the_protocol_and_other_features() -> None:
    # A feature's REST routes use the REST API's authentication and JSON helpers, nothing else of the transport.
    allowed = ("server.core", "server.store", "server.backplane", "server.features", "server.settings",
               "server.uploads", "server.dist_files", "server.transport.rest.auth",
               "server.transport.rest.encoding")  # fmt: skip
    wrong = [
        f"{name} imports {target}"
        for name, tree in SERVER_MODULES.items()
        if name.startswith("server.features")
        for target, _, _ in imports(tree)
        if target.startswith(("server.", "clients", "provisioning")) and not target.startswith(allowed)
    ]
    assert wrong == []


def test_no_project_import_is_deferred_except_optional_backends() -> None:
    deferred = [
        f"{name}:{line} imports {target}"
        for name, tree in SERVER_MODULES.items()
        for target, line, is_deferred in imports(tree)
        if is_deferred
        and target.split(".")[0] in ("server", "clients", "protocol", "provisioning")
        and not {(name, target), (name, target.rpartition(".")[0])} & DEFERRED_ALLOWED
    ]
    assert deferred == []


def test_server_and_clients_never_import_each_other() -> None:
    edges = {(name, t) for name, tree in SERVER_MODULES.items() for t, _, _ in imports(tree) if t.startswith("clients")}
    for name, tree in sources(ROOT / "clients"):
        edges |= {(name, t) for t, _, _ in imports(tree) if t.startswith("server")}
    assert edges == set()  # crc_cli/ joins the two for the `crc` command


def test_the_hub_keeps_at_most_ten_attributes() -> None:
    hub = next(n for n in SERVER_MODULES["server.core.hub"].body if isinstance(n, ast.ClassDef) and n.name == "Hub")
    attributes = {
        target.attr
        for node in ast.walk(hub)
        if isinstance(node, ast.Assign | ast.AnnAssign)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self"
    }
    assert len(attributes) <= 10, sorted(attributes)


def test_no_handler_begins_by_asserting_its_body_type() -> None:
    wrong = []
    for name, tree in SERVER_MODULES.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.AsyncFunctionDef) and node.body:
                first = [s for s in node.body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant))]
                head = first[:2]
                if any(isinstance(s, ast.Assert) and "isinstance" in ast.unparse(s) for s in head):
                    wrong.append(f"{name}.{node.name}")
    assert wrong == []


def store_protocols() -> dict[str, list[str]]:
    tree = SERVER_MODULES["server.store.interfaces"]
    return {
        node.name: [f.name for f in node.body if isinstance(f, ast.FunctionDef | ast.AsyncFunctionDef)]
        for node in tree.body
        if isinstance(node, ast.ClassDef)
    }


def test_no_store_protocol_has_more_than_eight_methods() -> None:
    protocols = store_protocols()
    assert protocols, "server/store/interfaces.py defines the store Protocols"
    assert {name: len(methods) for name, methods in protocols.items() if len(methods) > 8} == {}


def test_the_store_is_its_protocols_and_nothing_more() -> None:

    methods = [m for name in store_protocols() for m in store_protocols()[name]]
    assert len(methods) == len(set(methods)), "a store method belongs to one Protocol"
    assert set(Store.__abstractmethods__) == {*methods, "close"}
    assert set(store_protocols()) <= {base.__name__ for base in Store.__mro__ if base.__module__ == interfaces.__name__}


def test_features_reach_the_store_only_through_a_protocol() -> None:
    """``hub.store.x(...)`` would hand a feature all of the store; ``stores.orders(hub).x(...)`` names the
    Protocol the call goes through (server/core/stores.py)."""
    wrong = [
        f"{name}:{node.lineno}"
        for name, tree in SERVER_MODULES.items()
        if not name.startswith(("server.core", "server.store", "server.app", "server.cli", "server.admin"))
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and node.attr == "store" and isinstance(node.value, ast.Name | ast.Attribute)
        and ast.unparse(node.value).endswith("hub")
    ]  # fmt: skip
    assert wrong == []


STORE_BACKENDS = ("server.store.sqlite", "server.store.redis")


def backend_parts(package: str) -> dict[str, list[str]]:
    """Protocol name -> the modules of ``package`` whose classes implement it (name it as a base)."""
    protocols = set(store_protocols())
    found: dict[str, list[str]] = {}
    for name, tree in SERVER_MODULES.items():
        if name.startswith(f"{package}."):
            for node in tree.body:
                if isinstance(node, ast.ClassDef):
                    for base in node.bases:
                        if isinstance(base, ast.Name) and base.id in protocols:
                            found.setdefault(base.id, []).append(name)
    return found


def test_each_store_backend_implements_each_protocol_in_one_module_of_its_package() -> None:
    for package in STORE_BACKENDS:
        parts = backend_parts(package)
        assert set(parts) == set(store_protocols()), package
        assert {p: ms for p, ms in parts.items() if len(ms) != 1} == {}, package


def test_a_store_backends_parts_share_only_its_base_module() -> None:
    """Each part (masters, jobs, orders...) can change alone: it imports its package's base, never another part."""
    wrong = [
        f"{name} imports {target}"
        for package in STORE_BACKENDS
        for name, tree in SERVER_MODULES.items()
        if name.startswith(f"{package}.") and name != f"{package}.base"
        for target, _, _ in imports(tree)
        if target.startswith(f"{package}.") and target != f"{package}.base"
    ]
    assert wrong == []


def test_the_redis_scripts_are_package_data_and_every_one_is_used() -> None:
    folder = SERVER / "store" / "redis"
    used = {
        file
        for path in folder.glob("*.py")
        for call in ast.walk(ast.parse(path.read_text()))
        if isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "lua"
        for file in (arg.value for arg in call.args if isinstance(arg, ast.Constant))
    }
    assert used == {path.name for path in folder.glob("*.lua")}
    package_data = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "*.lua" in package_data["server.store.redis"], "a wheel (not an editable install) needs the scripts"


def test_event_kinds_are_matched_only_through_event_kind() -> None:
    """No consumer compares an event's kind with a string of its own (``kind == "machine_ready"``): a renamed kind
    would then break it silently. They go through ``protocol.events.EventKind`` (or the payload classes)."""
    from protocol.events import EventKind

    kinds = {kind.value for kind in EventKind}
    found = []
    for package in ("server", "clients", "provisioning", "crc_cli", "protocol", "bench"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "protocol" / "events.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                compared = (
                    [node.left, *node.comparators] if isinstance(node, ast.Compare)
                    else [k.value for k in node.keywords if k.arg == "kind"] if isinstance(node, ast.Call)
                    else []
                )  # fmt: skip
                for operand in compared:
                    for leaf in ast.walk(operand):
                        if isinstance(leaf, ast.Constant) and leaf.value in kinds:
                            found.append(f"{path.relative_to(ROOT)}:{leaf.lineno}: {leaf.value!r}")
    assert found == []
