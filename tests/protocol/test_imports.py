"""The protocol package is pure: no I/O, no event loop, no clock, no environment, no ambient randomness."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROTOCOL_DIR = Path(__file__).resolve().parents[2] / "protocol"
SOURCES = sorted(PROTOCOL_DIR.glob("*.py"))

# Named in the package docstring: callers pass time and randomness in and move the bytes themselves.
FORBIDDEN_MODULES = {
    "asyncio",
    "aiohttp",
    "websockets",
    "redis",
    "socket",
    "time",
    "os",
    "datetime",
    "random",
    "secrets",
    "subprocess",
    "threading",
}
CLOCK_READS = {
    ("time", "time"),
    ("time", "time_ns"),
    ("time", "monotonic"),
    ("time", "monotonic_ns"),
    ("time", "perf_counter"),
    ("datetime", "now"),
    ("datetime", "utcnow"),
    ("datetime", "today"),
    ("date", "today"),
}


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an ``import`` or ``from ... import`` statement names (relative imports stay in-package)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def clock_reads(tree: ast.AST) -> list[str]:
    """``time.time``-style attribute accesses (``datetime.datetime.now`` included)."""
    reads = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            owner = node.value
            owner_name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", None)
            if (owner_name, node.attr) in CLOCK_READS:
                reads.append(f"{owner_name}.{node.attr} (line {node.lineno})")
    return reads


def test_the_protocol_package_has_the_expected_modules() -> None:
    names = {path.name for path in SOURCES}
    assert {
        "__init__.py",
        "envelope.py",
        "errors.py",
        "identity.py",
        "messages.py",
        "orders.py",
        "retry.py",
        "session.py",
    } <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_a_protocol_module_imports_nothing_that_does_io_or_reads_the_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offending = {module for module in imported_modules(tree) if module.split(".")[0] in FORBIDDEN_MODULES}
    assert not offending, f"{path.name} imports {sorted(offending)}"


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_a_protocol_module_reads_no_clock(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    assert clock_reads(tree) == []
    assert "time.time" not in path.read_text(encoding="utf-8")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.name)
def test_a_protocol_module_neither_opens_files_nor_reads_the_environment(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    calls = {node.func.id for node in ast.walk(tree) if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)}
    assert not calls & {"open", "input", "print", "exec", "eval", "__import__"}
    assert not imported_modules(tree) & {"importlib", "pathlib", "io", "sys", "shutil"}


def test_the_import_checker_catches_every_import_form() -> None:
    tree = ast.parse("import os.path\nfrom time import monotonic\nimport asyncio as aio\nfrom . import sibling\n")
    assert imported_modules(tree) == {"os.path", "time", "asyncio"}


def test_the_clock_checker_catches_direct_and_qualified_reads() -> None:
    tree = ast.parse("a = time.time()\nb = datetime.datetime.now()\nc = clock.time\n")
    assert [read.split(" ")[0] for read in clock_reads(tree)] == ["time.time", "datetime.now"]
