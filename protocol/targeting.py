"""Which machines a target names. Accepted everywhere a target is (SDK, CLI, plans):

- ``all``: every machine of the scenario;
- ``web``: the machine of that name (unknown names are an error, not an empty selection);
- ``role:web``: every machine with that role;
- ``label:tier=front``: every machine with that label value (``label:tier`` alone: any value);
- ``web-*``: a glob on names (``*``, ``?``, ``[...]``);
- ``db,role:web,label:zone=b``: a comma-separated list: the union, in scenario order, each machine once.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from typing import Protocol, TypeVar


class Targetable(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def role(self) -> str: ...
    @property
    def labels(self) -> dict[str, str]: ...


M = TypeVar("M", bound=Targetable)


class UnknownMachine(KeyError):
    """A target names a machine the scenario does not have."""


def _matches(machine: Targetable, selector: str) -> bool:
    if selector == "all":
        return True
    if selector.startswith("role:"):
        return machine.role == selector[len("role:") :]
    if selector.startswith("label:"):
        key, sep, value = selector[len("label:") :].partition("=")
        return key in machine.labels and (not sep or machine.labels[key] == value)
    return fnmatch.fnmatchcase(machine.name, selector)


def is_pattern(selector: str) -> bool:
    """Whether a selector may rightly match nothing (a role, a label, a glob), unlike a plain name."""
    return selector == "all" or selector.startswith(("role:", "label:")) or any(c in selector for c in "*?[")


def selects(target: str, machine: Targetable) -> bool:
    """Whether ``target`` names this one machine, judged alone (a plain name of another machine is no error
    here: a composition's daemon knows only itself)."""
    return any(_matches(machine, part.strip()) for part in target.split(",") if part.strip())


def select(machines: Sequence[M], target: str) -> list[M]:
    """The machines ``target`` names, in scenario order.

    Raises:
        UnknownMachine: a plain name in the target is not a machine of the scenario.
    """
    selectors = [part.strip() for part in target.split(",") if part.strip()]
    names = {m.name for m in machines}
    for selector in selectors:
        if not is_pattern(selector) and selector not in names:
            raise UnknownMachine(f"the scenario has no machine {selector!r}")
    return [m for m in machines if any(_matches(m, s) for s in selectors)]
