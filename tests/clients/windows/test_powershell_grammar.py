"""Every PowerShell text the project ships or generates parses with a real PowerShell grammar (tree-sitter)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from clients.windows.powershell import wrap_script

tree_sitter = pytest.importorskip("tree_sitter", reason="tree-sitter is not installed (pip install -e '.[test]')")
tree_sitter_powershell = pytest.importorskip(
    "tree_sitter_powershell", reason="no PowerShell grammar installed (pip install tree-sitter-powershell)"
)

REPO = Path(__file__).resolve().parents[3]
NOT_SHIPPED = {".venv", "node_modules", ".git", "build"}
SHIPPED_PS1 = sorted(path for path in REPO.rglob("*.ps1") if not NOT_SHIPPED & set(path.parts))

README_BLOCKS = re.findall(r"^```powershell\n(.*?)^```", (REPO / "README.md").read_text(encoding="utf-8"), re.M | re.S)

USER_SCRIPTS = [
    "Get-Service | Where-Object Status -eq 'Running'",
    "$ErrorActionPreference = 'Continue'\ncmd /c exit 3",
    'Write-Output "quotes \' and `" and $($env:PATH)"',
    "Write-Output 'grüße, привет, 日本語'",
    "exit 7",
    "this is { not ( valid PowerShell",
    "",
]


def parse(text: str) -> Any:
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_powershell.language()))
    return parser.parse(text.encode("utf-8")).root_node


def problems(node: Any) -> list[str]:
    """Every ERROR or MISSING node, with its position."""
    found = []
    stack = [node]
    while stack:
        current = stack.pop()
        if current.is_error or current.is_missing:
            found.append(f"{current.type} at {current.start_point}: {current.text!r}")
        stack.extend(current.children)
    return found


def test_the_grammar_really_rejects_broken_powershell() -> None:
    root = parse("try { $x = ( } catch {")
    assert root.has_error and problems(root)


@pytest.mark.parametrize("user_script", USER_SCRIPTS)
def test_the_wrapper_parses_cleanly_for_any_user_script(user_script: str) -> None:
    root = parse(wrap_script(user_script))
    assert root.type == "program"
    assert problems(root) == []
    assert not root.has_error


def test_the_wrapper_has_the_expected_structure() -> None:
    root = parse(wrap_script("hostname"))
    kinds = set()
    stack = [root]
    while stack:
        node = stack.pop()
        kinds.add(node.type)
        stack.extend(node.children)
    assert {"try_statement", "catch_clause", "if_statement", "flow_control_statement"} <= kinds


@pytest.mark.parametrize(
    "path",
    [pytest.param(path, id=str(path.relative_to(REPO))) for path in SHIPPED_PS1]
    or [pytest.param(None, marks=pytest.mark.skip(reason="the project ships no .ps1 files (yet)"))],
)
def test_every_shipped_ps1_file_parses_cleanly(path: Path) -> None:
    assert problems(parse(path.read_text(encoding="utf-8-sig"))) == []


def test_the_readme_has_powershell_instructions() -> None:
    assert README_BLOCKS, "the Windows install section shows its commands in a ```powershell block"


@pytest.mark.parametrize("block", README_BLOCKS)
def test_every_powershell_block_in_the_readme_parses_cleanly(block: str) -> None:
    assert problems(parse(block)) == []
