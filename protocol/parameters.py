"""Typed parameters of stored jobs (``crc job add --param``), as Rundeck's job options or SSM document parameters:
a name, a type (string, integer, a choice, or a secret), and a default, or none (then it is required).

They are part of the job's signed statement (``protocol.jobs``), so a hub cannot add, drop or loosen one; the
master checks the values it is given against them before anything is signed. A job's script reads each value
from an environment variable of the parameter's name (never substituted into the script text, so a value cannot
change what the script says); a secret parameter's value travels sealed to each machine instead
(``ExecBody.secrets``), never in the environment map the hub stores.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from protocol.errors import ErrorCode, ProtocolError

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
MAX_PARAMETERS = 32
MAX_VALUE = 4096
MAX_CHOICES = 64
_SPEC = re.compile(
    r"^(?P<name>[^:=?]+)(?P<optional>\?)?(?::(?P<type>[a-z]+)(?:\((?P<choices>[^)]*)\))?)?(?:=(?P<default>.*))?$"
)


class ParameterType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    CHOICE = "choice"
    SECRET = "secret"


def _bad(message: str, **details: Any) -> ProtocolError:
    return ProtocolError(ErrorCode.BAD_FIELD, message, **details)


@dataclass(frozen=True)
class JobParameter:
    name: str
    type: ParameterType = ParameterType.STRING
    default: str | None = None  # None: no default (required unless ``optional``)
    choices: tuple[str, ...] = ()
    optional: bool = False  # may be left out, with no default: its variable is then not set

    @property
    def required(self) -> bool:
        return self.default is None and not self.optional

    def check(self, value: str) -> str:
        """``value`` as the script gets it.

        Raises:
            ProtocolError: BAD_FIELD naming the parameter and what it takes.
        """
        if len(value) > MAX_VALUE:
            raise _bad(f"parameter {self.name} takes at most {MAX_VALUE} characters", parameter=self.name)
        if self.type is ParameterType.INTEGER:
            try:
                return str(int(value.strip()))
            except ValueError:
                raise _bad(f"parameter {self.name} is an integer, not {value!r}", parameter=self.name) from None
        if self.type is ParameterType.CHOICE and value not in self.choices:
            raise _bad(f"parameter {self.name} is one of {', '.join(self.choices)}, not {value!r}", parameter=self.name)
        return value

    def to_wire(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type.value, "default": self.default, "choices": list(self.choices),
                "optional": self.optional}  # fmt: skip

    @classmethod
    def from_wire(cls, raw: Any) -> JobParameter:
        if not isinstance(raw, Mapping):
            raise _bad("a job parameter is a map")
        name, kind, default = raw.get("name"), raw.get("type", "string"), raw.get("default")
        choices, optional = raw.get("choices", []), raw.get("optional", False)
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise _bad("a job parameter's choices are strings")
        if not isinstance(optional, bool) or not isinstance(kind, str) or not isinstance(name, str):
            raise _bad("a job parameter has a name, a type and whether it is optional")
        if default is not None and not isinstance(default, str):
            raise _bad(f"parameter {name}'s default is a string")
        try:
            parameter_type = ParameterType(kind)
        except ValueError:
            raise _bad(f"parameter {name}'s type is one of {', '.join(ParameterType)}, not {kind!r}") from None
        return declared(cls(name, parameter_type, default, tuple(choices), optional))


def declared(parameter: JobParameter) -> JobParameter:
    """The parameter, once it is well formed.

    Raises:
        ProtocolError: BAD_FIELD saying what is wrong with it.
    """
    if not NAME.match(parameter.name):
        raise _bad(f"a parameter name is a variable name (letters, digits, _), not {parameter.name!r}")
    if parameter.type is ParameterType.CHOICE:
        if not parameter.choices or len(parameter.choices) > MAX_CHOICES:
            raise _bad(f"choice parameter {parameter.name} lists 1 to {MAX_CHOICES} choices")
    elif parameter.choices:
        raise _bad(f"only a choice parameter lists choices ({parameter.name} is {parameter.type.value})")
    if parameter.type is ParameterType.SECRET and parameter.default is not None:
        raise _bad(f"secret parameter {parameter.name} cannot have a default: it would be stored in the clear")
    if parameter.default is not None:
        parameter.check(parameter.default)
    return parameter


def parse_spec(spec: str) -> JobParameter:
    """``NAME[?][:TYPE][=DEFAULT]``, TYPE one of string (the default), integer, secret or ``choice(a|b|c)``;
    ``?``: optional without a default. ``release``, ``replicas:integer=2``, ``stage:choice(dev|prod)=dev``,
    ``token:secret``, ``note?``.

    Raises:
        ProtocolError: BAD_FIELD saying what is wrong.
    """
    found = _SPEC.match(spec.strip())
    if found is None:
        raise _bad(f"{spec!r} is not NAME[?][:TYPE][=DEFAULT]")
    kind = found["type"] or "string"
    try:
        parameter_type = ParameterType(kind)
    except ValueError:
        raise _bad(f"{spec!r}: a type is one of {', '.join(ParameterType)}, not {kind!r}") from None
    if (found["choices"] is None) != (parameter_type is not ParameterType.CHOICE):
        raise _bad(f"{spec!r}: a choice parameter is written choice(a|b|c), and only it lists choices")
    choices = tuple(c.strip() for c in (found["choices"] or "").split("|") if c.strip())
    return declared(JobParameter(found["name"].strip(), parameter_type, found["default"], choices,
                                 bool(found["optional"])))  # fmt: skip


def check_parameters(parameters: Sequence[JobParameter]) -> tuple[JobParameter, ...]:
    """Raises ProtocolError BAD_FIELD for too many parameters or a name used twice."""
    if len(parameters) > MAX_PARAMETERS:
        raise _bad(f"a job has at most {MAX_PARAMETERS} parameters")
    names = [p.name for p in parameters]
    if len(set(names)) != len(names):
        raise _bad(f"a job's parameter names are unique ({', '.join(sorted(n for n in names if names.count(n) > 1))})")
    return tuple(declared(p) for p in parameters)


@dataclass(frozen=True)
class Arguments:
    """What a run of a job is given: plain values (its environment) and the names of the secrets it has."""

    values: dict[str, str]
    secrets: frozenset[str]


def resolve(parameters: Sequence[JobParameter], given: Mapping[str, str], secrets: Sequence[str]) -> Arguments:
    """The job's environment for these values, defaults filled in, every value checked; ``secrets`` names the
    secret values given (sealed apart, never in the environment).

    Raises:
        ProtocolError: BAD_FIELD for an unknown parameter, a missing required one, a value of the wrong type, a
            secret given as a plain value or a plain one given as a secret.
    """
    by_name = {p.name: p for p in parameters}
    for name in [*given, *secrets]:
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            raise _bad(f"the job has no parameter {name!r} (its parameters: {known})", parameter=name)
    values: dict[str, str] = {}
    for parameter in parameters:
        secret = parameter.type is ParameterType.SECRET
        if parameter.name in given and secret:
            raise _bad(f"parameter {parameter.name} is a secret: give it with --secret, never as a plain value")
        if parameter.name in secrets and not secret:
            raise _bad(f"parameter {parameter.name} is not a secret: give it with --param")
        if secret:
            if parameter.required and parameter.name not in secrets:
                raise _bad(f"secret parameter {parameter.name} is required (--secret {parameter.name}=@FILE)")
            continue
        if parameter.name in given:
            values[parameter.name] = parameter.check(given[parameter.name])
        elif parameter.default is not None:
            values[parameter.name] = parameter.default
        elif parameter.required:
            raise _bad(f"parameter {parameter.name} is required (--param {parameter.name}=VALUE)")
    return Arguments(values, frozenset(secrets))
