"""Secret parameters of a command (``Master.run(..., secrets=...)``, ``crc run --secret``), sealed per machine.

A secret is never part of the command text, never in clear on the hub: for each target machine, and each order
(one per machine), the master seals the value to that machine's sealing key under the order's own context
(``protocol.order_bodies.secret_context``) and signs the ciphertexts into the order's body. The sealing key is
the one this master's certificate, or the machine's signed key rotations, name (``MachineInfo.sealing_key``),
never one the hub merely shows. Everything is checked before anything is signed: bad names, values too short to
be redacted or too long, a name also given as a plain variable, a machine without a sealing key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from clients.master.models import MachineInfo
from protocol import ProtocolError
from protocol.order_bodies import (
    MAX_SECRET_BYTES,
    MAX_SECRETS,
    MIN_SECRET_BYTES,
    SECRET_NAME,
    ExecBody,
    secret_context,
)
from protocol.sealing import SealingKey, seal

SecretValues = Mapping[str, bytes | str]


class SecretRefused(ValueError):
    """A secret parameter that cannot be sent as given (the message says which and why); nothing was sent."""


def checked_secrets(secrets: SecretValues, env: Mapping[str, str] | None = None) -> dict[str, bytes]:
    """The secrets as bytes (a str is UTF-8), once each is fit to send.

    Raises:
        SecretRefused: too many, a name that is not an environment variable name, a value shorter than
            ``MIN_SECRET_BYTES`` (it could not be redacted from output without masking ordinary text) or longer
            than ``MAX_SECRET_BYTES``, one holding a NUL byte, or a name also in ``env``.
    """
    if len(secrets) > MAX_SECRETS:
        raise SecretRefused(f"at most {MAX_SECRETS} secrets per command (got {len(secrets)})")
    values: dict[str, bytes] = {}
    for name, value in secrets.items():
        if not isinstance(name, str) or not SECRET_NAME.match(name):
            raise SecretRefused(
                f"secret name {name!r} is not an environment variable name (a letter or _, then letters, digits "
                "or _, at most 64)"
            )
        if name in (env or {}):
            raise SecretRefused(f"{name} is given both as a plain variable (env) and as a secret")
        raw = value.encode("utf-8") if isinstance(value, str) else value
        if not isinstance(raw, bytes):
            raise SecretRefused(f"secret {name}: its value must be bytes or str")
        if len(raw) < MIN_SECRET_BYTES:
            raise SecretRefused(
                f"secret {name} is {len(raw)} bytes: at least {MIN_SECRET_BYTES} are needed, since a shorter value "
                "could not be redacted from output without hiding ordinary text"
            )
        if b"\x00" in raw:
            raise SecretRefused(f"secret {name} holds a NUL byte, which no environment variable can")
        if len(raw) > MAX_SECRET_BYTES:
            raise SecretRefused(
                f"secret {name} is {len(raw)} bytes, more than {MAX_SECRET_BYTES} (send a file with crc put instead)"
            )
        values[name] = raw
    return values


def sealing_refusal(scenario: str, machines: Sequence[MachineInfo]) -> str | None:
    """Why something cannot be sealed to each of these machines (None: it can): the first without a sealing key
    its certificate or signed key rotations name, or with one that is unusable. The same for secrets and files.
    """
    for machine in machines:
        problem = ""
        if not machine.sealing_key:
            problem = "has no sealing key (its certificate, or its last key rotation, is from before secrets)"
        else:
            try:
                SealingKey.from_text(machine.sealing_key)
            except ProtocolError as exc:
                problem = f"has an unusable sealing key ({exc.message})"
        if problem:
            return (
                f"machine {machine.name!r} of {scenario!r} {problem}: give it one with `crc machine rotate-key "
                f"{scenario} {machine.name}` (its daemon must be up to date), then try again"
            )
    return None


class SealedSecrets:
    """The secrets of one ``run``: checked once, sealed anew for each machine's order (``Master.dispatch``)."""

    def __init__(self, base: ExecBody, values: Mapping[str, bytes]) -> None:
        self.base = base
        self.values = dict(values)

    def refusal(self, scenario: str, machines: Sequence[MachineInfo]) -> str | None:
        """Why these machines cannot be sent the secrets (None: they can)."""
        return sealing_refusal(scenario, machines)

    def body(self, scenario: str, machine: MachineInfo, order_id: str) -> dict[str, Any]:
        """The order body for ``machine``: the base body with each secret sealed to it for ``order_id``."""
        key = SealingKey.from_text(machine.sealing_key)
        sealed = {
            name: seal(key, value, secret_context(scenario, machine.id, order_id, name))
            for name, value in self.values.items()
        }
        return replace(self.base, secrets=sealed).to_wire()
