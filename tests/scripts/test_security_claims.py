"""SECURITY.md backs each claim with a named test: every one it names exists, so a renamed or deleted test
cannot leave a claim unbacked."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# `file.py::test_name`, or `::test_name` for another test of the file named last.
_REFERENCE = re.compile(r"`((?:[\w/]+\.py)?)::(test_\w+)`|`([\w/]+\.py)`")


def named_tests(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    current = ""
    for match in _REFERENCE.finditer(text):
        path, name, bare_file = match.groups()
        if bare_file:
            if Path(bare_file).name.startswith("test_"):
                found.append((bare_file, ""))
            continue
        current = path or current
        found.append((current, name))
    return found


def test_every_test_security_md_names_exists() -> None:
    references = named_tests((ROOT / "SECURITY.md").read_text(encoding="utf-8"))
    assert len(references) > 40
    missing = []
    for path, name in references:
        source = ROOT / "tests" / path.removeprefix("tests/")
        if not source.is_file():
            missing.append(f"{path} (no such file)")
        elif name and not re.search(rf"^(async )?def {name}\(", source.read_text(encoding="utf-8"), re.M):
            missing.append(f"{path}::{name}")
    assert not missing, "SECURITY.md names tests that do not exist: " + ", ".join(missing)
