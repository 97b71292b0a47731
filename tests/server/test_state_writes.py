"""Plan step states change only through the transition table: no code in ``protocol/`` or ``server/`` assigns to a
``states[...]`` item except ``PlanRun.move`` (``protocol.plans.STEP_TRANSITIONS``)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = sorted([*(ROOT / "protocol").rglob("*.py"), *(ROOT / "server").rglob("*.py")])
ALLOWED = {("protocol/plans.py", "move")}


def state_writes(tree: ast.AST) -> list[tuple[str, int]]:
    """(enclosing function, line) of every ``<...>.states[key] = ...`` (plain, augmented or annotated)."""
    found: list[tuple[str, int]] = []

    def visit(node: ast.AST, function: str) -> None:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        for target in targets:
            if (
                isinstance(target, ast.Subscript)
                and isinstance(target.value, ast.Attribute)
                and target.value.attr == "states"
            ):
                found.append((function, node.lineno))
        for child in ast.iter_child_nodes(node):
            visit(child, function)

    visit(tree, "")
    return found


def test_step_states_are_written_only_by_plan_run_move() -> None:
    offending = [
        f"{path.relative_to(ROOT)}:{line} (in {function or 'module'})"
        for path in SOURCES
        for function, line in state_writes(ast.parse(path.read_text(), str(path)))
        if (path.relative_to(ROOT).as_posix(), function) not in ALLOWED
    ]
    assert offending == [], "write step states through PlanRun.move: " + ", ".join(offending)


def test_the_check_finds_a_direct_write() -> None:
    tree = ast.parse("def dispatch(self):\n    self.run.states[sid] = StepState.RUNNING\n")
    assert state_writes(tree) == [("dispatch", 2)]
    assert len(state_writes(ast.parse("def move(self):\n    self.states[step_id] = x\n"))) == 1
