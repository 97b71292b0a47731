"""Signed stored jobs: the master's statement of what a stored job is, so the hub that keeps it cannot change it.

A stored job lives on the hub, and playing it means the master signs its script into orders. If the master
signed whatever the hub handed back, a hub (or anyone holding its data dir) could swap the script after the
master reviewed it. So ``crc job add`` signs a ``JobStatement``: "job NAME, version V, of master M (for scenario
S, or any of M's scenarios), is this script in this shell". The hub stores it and its signature; the master runs,
shows or plans only a statement that verifies against its own key and names what it asked for.

The version is the master's choice (the highest it verified, plus one), and is signed: the hub cannot bump or
reuse a number, and a reader that remembers a version can refuse an older one handed back in its place.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from protocol.envelope import pack
from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity, PublicKey
from protocol.orders import canonical
from protocol.parameters import JobParameter, check_parameters

ANY_SCENARIO = ""


@dataclass(frozen=True)
class JobStatement:
    master: str  # the signing master's id
    scenario: str  # the one scenario it may run in; ANY_SCENARIO = every scenario of the master
    name: str
    version: int
    shell: str
    script: str
    created: float  # unix time the master signed this version (the caller's clock)
    signature: bytes = b""
    parameters: tuple[JobParameter, ...] = ()  # what a run of it is given (``protocol.parameters``)

    def signing_payload(self) -> bytes:
        fields = [self.master, self.scenario, self.name, int(self.version), self.shell, self.script,
                  float(self.created)]  # fmt: skip
        if not self.parameters:  # as jobs were signed before they had parameters, so those still verify
            return pack(["crc-job-v1", *fields])
        return pack(["crc-job-v2", *fields, canonical([p.to_wire() for p in self.parameters])])

    def signed(self, master: Identity) -> JobStatement:
        """This statement as ``master``'s, signed by it (``master`` is set to its id first)."""
        unsigned = replace(self, master=master.id, signature=b"")
        return replace(unsigned, signature=master.sign(unsigned.signing_payload()))

    def verify(self, master_key: PublicKey, name: str, *, scenario: str | None = None,
               version: int | None = None) -> None:  # fmt: skip
        """Raises ProtocolError unless ``master_key`` signed this statement for job ``name`` (and, when given,
        a job that may run in ``scenario`` and is exactly ``version``): BAD_SIGNATURE for another master's or a
        changed statement or another job, WRONG_TARGET for another scenario, NOT_FOUND for another version."""
        if self.master != master_key.id:
            raise ProtocolError(ErrorCode.BAD_SIGNATURE, f"job {name!r} is not signed by this master", job=name)
        master_key.verify(self.signature, self.signing_payload())
        if self.name != name:
            raise ProtocolError(
                ErrorCode.BAD_SIGNATURE, f"the statement given for job {name!r} is job {self.name!r}'s", job=name
            )
        if scenario is not None and self.scenario not in (ANY_SCENARIO, scenario):
            raise ProtocolError(
                ErrorCode.WRONG_TARGET,
                f"job {name!r} is signed for scenario {self.scenario!r} only, not {scenario!r}",
                job=name,
            )
        if version is not None and self.version != version:
            raise ProtocolError(
                ErrorCode.NOT_FOUND, f"job {name!r} is version {self.version}, not version {version}", job=name
            )

    def unsigned_wire(self) -> dict[str, Any]:
        """The signed fields, without the signature (which the hub keeps beside them)."""
        wire = {"master": self.master, "scenario": self.scenario, "name": self.name, "version": self.version,
                "shell": self.shell, "script": self.script, "created": self.created}  # fmt: skip
        if self.parameters:
            wire["parameters"] = [p.to_wire() for p in self.parameters]
        return wire

    def to_wire(self) -> dict[str, Any]:
        return {**self.unsigned_wire(), "signature": self.signature}

    @classmethod
    def from_wire(cls, raw: Any, signature: bytes | None = None) -> JobStatement:
        """``raw`` as ``to_wire`` wrote it, or as ``unsigned_wire`` did with ``signature`` given apart.

        Raises:
            ProtocolError: BAD_FIELD for a malformed statement.
        """
        if not isinstance(raw, dict):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a job statement is a map")
        texts: dict[str, str] = {}
        for field in ("master", "scenario", "name", "shell", "script"):
            value = raw.get(field)
            if not isinstance(value, str):
                raise ProtocolError(ErrorCode.BAD_FIELD, f"job statement field {field!r} is missing", field=field)
            texts[field] = value
        version, created = raw.get("version"), raw.get("created")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise ProtocolError(ErrorCode.BAD_FIELD, "a job statement's version is a positive integer")
        if not isinstance(created, int | float) or isinstance(created, bool):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a job statement's created time is a number")
        signed_by = raw.get("signature", b"") if signature is None else signature
        if not isinstance(signed_by, bytes):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a job statement's signature is bytes")
        declared = raw.get("parameters", [])
        if not isinstance(declared, list):
            raise ProtocolError(ErrorCode.BAD_FIELD, "a job statement's parameters are a list")
        parameters = check_parameters([JobParameter.from_wire(p) for p in declared])
        return cls(**texts, version=version, created=float(created), signature=signed_by, parameters=parameters)
