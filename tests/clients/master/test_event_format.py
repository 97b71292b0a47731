"""How ``crc watch`` prints events: one line each; a failed startup step also shows the end of its output."""

from __future__ import annotations

from clients.master.cli import format_event
from clients.master.models import EventInfo


def event(kind: str, data: dict[str, object], machine: str = "web") -> EventInfo:
    return EventInfo("shop", 7, kind, machine, 0.0, dict(data))


def test_boot_steps_read_as_step_and_status() -> None:
    line = format_event(
        event("boot_step", {"step": "installing-python", "status": "running", "detail": "x" * 500, "time": 0})
    )
    assert line.endswith("boot_step              installing-python running")


def test_a_failed_boot_step_shows_the_last_lines_of_its_output() -> None:
    detail = "\n".join(f"line {i}" for i in range(30)) + "\nERROR: not a wheel"
    text = format_event(
        event("boot_step", {"step": "installing-daemon", "status": "failed", "detail": detail, "time": 0})
    )
    lines = text.splitlines()
    assert lines[0].endswith("installing-daemon failed")
    assert [line.split("| ", 1)[1] for line in lines[1:]] == [
        *(f"line {i}" for i in range(21, 30)),
        "ERROR: not a wheel",
    ]


def test_other_events_list_their_fields() -> None:
    line = format_event(event("command_finished", {"order_id": "abc", "status": "succeeded", "session": "hidden"}))
    assert "order_id=abc status=succeeded" in line and "session" not in line
