"""Boot reports: how a machine's startup script tells the hub which step it is on before the daemon exists.

A startup script has no session with the hub, and PowerShell and bash cannot sign Ed25519, so each report is
authenticated with an HMAC-SHA256 under the machine's *report key*: a secret derived from the machine's private
key (``Identity.derive``), which the master computes when it mints the key and registers with the hub beside the
public key. The key only lets its holder add boot steps to that one machine's event log.

A report is a plain HTTP POST whose body is the step's output tail (raw bytes, so scripts need no JSON encoder)
and whose headers carry the rest; the MAC covers all of it::

    X-CRC-Machine: <machine id>      X-CRC-Time: <unix seconds>      X-CRC-Step: installing-python
    X-CRC-Status: running|ok|failed  X-CRC-Signature: hmac-sha256=<hex>

MAC input: ``"crc-boot-v1\\n{machine}\\n{time}\\n{step}\\n{status}\\n"`` followed by the body bytes.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from protocol.errors import ErrorCode, ProtocolError
from protocol.identity import Identity

REPORT_KEY_LABEL = b"boot-report"
SIGNATURE_PREFIX = "hmac-sha256="
MAX_DETAIL = 16 * 1024
MAX_SKEW = 600.0
MAX_TIME = 2**63
STEP_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")

HEADER_MACHINE = "X-CRC-Machine"
HEADER_TIME = "X-CRC-Time"
HEADER_STEP = "X-CRC-Step"
HEADER_STATUS = "X-CRC-Status"
HEADER_SIGNATURE = "X-CRC-Signature"


class BootStatus(StrEnum):
    RUNNING = "running"
    OK = "ok"
    FAILED = "failed"


def report_key(identity: Identity) -> bytes:
    """The machine's report key (32 bytes); the master registers its hex form with the hub."""
    return identity.derive(REPORT_KEY_LABEL)


@dataclass(frozen=True)
class BootReport:
    machine: str
    time: int
    step: str
    status: BootStatus
    detail: bytes = b""

    def mac_input(self) -> bytes:
        head = f"crc-boot-v1\n{self.machine}\n{self.time}\n{self.step}\n{self.status.value}\n"
        return head.encode("ascii") + self.detail

    def signature(self, key: bytes) -> str:
        return SIGNATURE_PREFIX + hmac.new(key, self.mac_input(), hashlib.sha256).hexdigest()

    def headers(self, key: bytes) -> dict[str, str]:
        """What a client sends (the body is ``detail``)."""
        return {
            HEADER_MACHINE: self.machine,
            HEADER_TIME: str(self.time),
            HEADER_STEP: self.step,
            HEADER_STATUS: self.status.value,
            HEADER_SIGNATURE: self.signature(key),
        }


def parse_report(headers: Mapping[str, str], body: bytes) -> tuple[BootReport, str]:
    """Read a report and its claimed signature from request headers (a case-insensitive mapping such as
    aiohttp's ``request.headers``); nothing is verified yet.

    Raises:
        ProtocolError: BAD_FIELD naming the header that is missing or malformed; FRAME_TOO_LARGE for a long body.
    """

    def field(name: str) -> str:
        value = headers.get(name)
        if not value:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"header {name} is missing", header=name)
        return value.strip()

    if len(body) > MAX_DETAIL:
        raise ProtocolError(ErrorCode.FRAME_TOO_LARGE, f"a boot report carries at most {MAX_DETAIL} bytes of output")
    machine, step, status_text, signature = (
        field(HEADER_MACHINE), field(HEADER_STEP), field(HEADER_STATUS), field(HEADER_SIGNATURE),
    )  # fmt: skip
    try:
        when = int(field(HEADER_TIME))
    except ValueError:
        raise ProtocolError(ErrorCode.BAD_FIELD, f"header {HEADER_TIME} must be whole unix seconds") from None
    if not -MAX_TIME < when < MAX_TIME:  # beyond a float's range the clock check would overflow
        raise ProtocolError(ErrorCode.BAD_FIELD, f"header {HEADER_TIME} is out of range", header=HEADER_TIME)
    if not (machine.isascii() and machine.isprintable()):  # the MAC input is ASCII
        raise ProtocolError(ErrorCode.BAD_FIELD, "a machine id is printable ASCII", header=HEADER_MACHINE)
    if not STEP_PATTERN.match(step):
        raise ProtocolError(
            ErrorCode.BAD_FIELD, "a step is 1-64 lower-case letters, digits, '.', '_' or '-'", header=HEADER_STEP
        )
    try:
        status = BootStatus(status_text)
    except ValueError:
        raise ProtocolError(
            ErrorCode.BAD_FIELD, f"status must be one of {[s.value for s in BootStatus]}", header=HEADER_STATUS
        ) from None
    if not signature.startswith(SIGNATURE_PREFIX):
        raise ProtocolError(ErrorCode.BAD_FIELD, f"the signature starts with {SIGNATURE_PREFIX!r}")
    return BootReport(machine, when, step, status, body), signature


def verify_report(report: BootReport, signature: str, key: bytes, now: float, max_skew: float = MAX_SKEW) -> None:
    """Check the MAC and the clock.

    Raises:
        ProtocolError: BAD_MAC for a wrong signature, STALE_TIMESTAMP beyond ``max_skew`` seconds either way.
    """
    if not hmac.compare_digest(report.signature(key), signature.strip().lower()):
        raise ProtocolError(ErrorCode.BAD_MAC, "the boot report's signature does not match the machine's report key")
    if abs(now - report.time) > max_skew:
        raise ProtocolError(
            ErrorCode.STALE_TIMESTAMP,
            f"the boot report is {now - report.time:+.0f} s off the hub's clock (limit {max_skew:.0f} s)",
        )
