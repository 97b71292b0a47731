"""What requirements/test.lock was made from, and whether it still matches pyproject.toml.

The lock pins the test, lint and type-check environment (pyproject.toml's runtime dependencies, its ``test``
extra and the build backend) with exact versions and hashes; scripts/lock.sh remakes it with uv and writes the
inputs it used into the lock's header. ``check`` compares that header with pyproject.toml as it is now, so a
dependency added to one and not the other fails before anything is installed. Standard library only: it runs
before the virtual environment exists.

    python3 scripts/lockfile.py check          exit 1 naming each difference, 0 when they agree
    python3 scripts/lockfile.py header         the header lock.sh writes (inputs included)
    python3 scripts/lockfile.py build-inputs   build-system.requires, one per line (uv reads them on stdin)
    python3 scripts/lockfile.py python-floor   the oldest Python requires-python admits, e.g. 3.11
    python3 scripts/lockfile.py runtime        provisioning/runtime.lock from the test lock (--write to save it)

``provisioning/runtime.lock`` is the part of the test lock a daemon needs (the runtime dependencies and what they
pull in, same versions and hashes): masters sign its SHA-256 into startup scripts and UPDATE orders, and machines
install with ``pip --no-index --require-hashes -r`` it, so the hub serving the files can change none of them.
``check`` also fails when it is not exactly what the test lock gives.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
INPUTS_MARK = "# inputs:"
INPUT_PREFIX = "#   "
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==\S+")
_VIA = re.compile(r"^\s+#\s+(?:via\s+)?([A-Za-z0-9][A-Za-z0-9._-]*)(?:\s|$)")
RUNTIME_LOCK = ROOT / "provisioning" / "runtime.lock"
RUNTIME_HEADER = (
    "# What a daemon installs: the runtime dependencies of requirements/test.lock and what they pull in, same\n"
    "# versions and hashes. Made by `python3 scripts/lockfile.py runtime --write` (lock.sh runs it); do not edit.\n"
)


def _normalize(requirement: str) -> str:
    """One spelling per requirement, so whitespace or quoting style never counts as a change."""
    return re.sub(r"\s+", "", requirement).replace('"', "'")


def _name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if match is None:
        raise ValueError(f"cannot read a package name in {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def load_pyproject(path: Path) -> dict[str, object]:
    with path.open("rb") as handle:
        return tomllib.load(handle)


def build_inputs(pyproject: dict[str, object]) -> list[str]:
    build = pyproject.get("build-system", {})
    assert isinstance(build, dict)
    return [str(item) for item in build.get("requires", [])]


def lock_inputs(pyproject: dict[str, object]) -> list[str]:
    """Every requirement the lock is made from: runtime dependencies, the test extra, the build backend."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    extras = project.get("optional-dependencies", {})
    requirements = [*project.get("dependencies", []), *extras.get("test", []), *build_inputs(pyproject)]
    return sorted({_normalize(str(item)) for item in requirements})


def python_floor(pyproject: dict[str, object]) -> str:
    project = pyproject["project"]
    assert isinstance(project, dict)
    match = re.search(r">=\s*(\d+\.\d+)", str(project.get("requires-python", "")))
    if match is None:
        raise ValueError("pyproject.toml's requires-python names no lower bound (>=3.X)")
    return match.group(1)


def header(pyproject: dict[str, object], uv_version: str) -> str:
    lines = [
        "# The test, lint and type-check environment, every version pinned with its hashes, for every platform",
        f"# and Python >= {python_floor(pyproject)}. Made by `bash scripts/lock.sh` (uv {uv_version}); do not edit.",
        "# scripts/test.sh installs exactly this; scripts/lockfile.py check compares the inputs with pyproject.toml.",
        INPUTS_MARK,
        *(INPUT_PREFIX + item for item in lock_inputs(pyproject)),
        "#",
    ]
    return "\n".join(lines) + "\n"


def recorded_inputs(lock_text: str) -> list[str] | None:
    lines = lock_text.splitlines()
    if INPUTS_MARK not in lines:
        return None
    recorded: list[str] = []
    for line in lines[lines.index(INPUTS_MARK) + 1 :]:
        if not line.startswith(INPUT_PREFIX):
            break
        recorded.append(line[len(INPUT_PREFIX) :].strip())
    return recorded


def pinned_names(lock_text: str) -> set[str]:
    return {_name(match.group(1)) for line in lock_text.splitlines() if (match := _PIN.match(line))}


def differences(pyproject: dict[str, object], lock_text: str) -> list[str]:
    """What keeps the lock from matching pyproject.toml, one sentence each; empty when it matches."""
    recorded = recorded_inputs(lock_text)
    if recorded is None:
        return ["the lock has no '# inputs:' header: it was not made by scripts/lock.sh"]
    wanted = lock_inputs(pyproject)
    problems = [
        f"pyproject.toml asks for {item!r}, which the lock was not made from" for item in wanted if item not in recorded
    ]
    problems += [
        f"the lock was made from {item!r}, which pyproject.toml no longer asks for"
        for item in recorded
        if item not in wanted
    ]
    pinned = pinned_names(lock_text)
    problems += [
        f"the lock pins no version of {_name(item)!r}"
        for item in wanted
        if item in recorded and _name(item) not in pinned
    ]
    return problems


def _entries(lock_text: str) -> list[tuple[str, list[str], set[str]]]:
    """(name, its lines, the names it is pulled in by) per pinned package of a uv lock."""
    entries: list[tuple[str, list[str], set[str]]] = []
    for line in lock_text.splitlines():
        match = _PIN.match(line)
        if match:
            entries.append((_name(match.group(1)), [line], set()))
        elif entries and line.startswith(" "):
            entries[-1][1].append(line)
            via = _VIA.match(line)
            if via and via.group(1) != "via":
                entries[-1][2].add(_name(via.group(1)))
    return entries


def runtime_lock(pyproject: dict[str, object], lock_text: str) -> str:
    """The runtime dependencies' closure within the test lock, as a requirements file with hashes."""
    project = pyproject["project"]
    assert isinstance(project, dict)
    wanted = {_name(str(item)) for item in project.get("dependencies", [])}
    entries = _entries(lock_text)
    grew = True
    while grew:
        before = len(wanted)
        wanted |= {name for name, _, parents in entries if parents & wanted}
        grew = len(wanted) != before
    kept = [
        "\n".join(line for line in lines if not line.lstrip().startswith("#"))
        for name, lines, _ in entries
        if name in wanted
    ]
    return RUNTIME_HEADER + "\n".join(kept) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["check", "header", "build-inputs", "python-floor", "runtime"])
    parser.add_argument("--write", action="store_true", help="runtime: write provisioning/runtime.lock")
    parser.add_argument("--runtime-lock", type=Path, default=RUNTIME_LOCK)
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml")
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements" / "test.lock")
    parser.add_argument("--uv-version", default="?")
    args = parser.parse_args(argv)
    pyproject = load_pyproject(args.pyproject)
    if args.action == "header":
        sys.stdout.write(header(pyproject, args.uv_version))
    elif args.action == "build-inputs":
        sys.stdout.write("".join(item + "\n" for item in build_inputs(pyproject)))
    elif args.action == "python-floor":
        print(python_floor(pyproject))
    elif args.action == "runtime":
        text = runtime_lock(pyproject, args.lock.read_text(encoding="utf-8"))
        if args.write:
            args.runtime_lock.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
    else:
        if not args.lock.exists():
            print(f"lock check: {args.lock} is missing: run `bash scripts/lock.sh`", file=sys.stderr)
            return 1
        lock_text = args.lock.read_text(encoding="utf-8")
        problems = differences(pyproject, lock_text)
        runtime = args.runtime_lock.read_text(encoding="utf-8") if args.runtime_lock.exists() else ""
        if not problems and runtime != runtime_lock(pyproject, lock_text):
            problems.append(f"{args.runtime_lock.name} is not what the test lock gives")
        for problem in problems:
            print(f"lock check: {problem}", file=sys.stderr)
        if problems:
            print(
                f"lock check: {args.lock.name} is out of date with pyproject.toml: run `bash scripts/lock.sh` "
                "and commit both",
                file=sys.stderr,
            )
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
