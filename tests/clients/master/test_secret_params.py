"""The master's checks of secret parameters (clients/master/secret_params.py), before anything is signed, and
its sealing of each one to each machine for its own order."""

from __future__ import annotations

import secrets

import pytest

from clients.master.models import MachineInfo
from clients.master.secret_params import SealedSecrets, SecretRefused, checked_secrets
from protocol import Identity, OrderKind
from protocol.order_bodies import ExecBody, parse_body, secret_context
from protocol.sealing import sealing_key, unseal

WEB = Identity.generate(secrets.token_bytes)


def machine(identity: Identity, sealing: str | None = None) -> MachineInfo:
    key = sealing_key(identity).to_text() if sealing is None else sealing
    return MachineInfo(identity.id, "web", "linux", "web", identity.public.to_text(), "ready", sealing_key=key)


def test_secrets_fit_to_send_become_bytes() -> None:
    assert checked_secrets({"DB_PASSWORD": "pässword", "KEY": b"\xff\xfe\x01\x02"}) == {
        "DB_PASSWORD": "pässword".encode(),
        "KEY": b"\xff\xfe\x01\x02",
    }


@pytest.mark.parametrize(
    ("secrets_", "env", "why"),
    [
        ({"1DB": "long enough"}, {}, "not an environment variable name"),
        ({"DB-PASS": "long enough"}, {}, "not an environment variable name"),
        ({"DB": "abc"}, {}, "at least 4 are needed"),
        ({"DB": b"x" * 8193}, {}, "more than 8192"),
        ({"DB": b"nul\x00inside"}, {}, "NUL byte"),
        ({"DB": "long enough"}, {"DB": "plain"}, "both as a plain variable"),
        ({f"S{i}": "long enough" for i in range(33)}, {}, "at most 32 secrets"),
    ],
)
def test_a_secret_that_cannot_be_sent_is_refused_saying_why_and_never_showing_its_value(
    secrets_: dict[str, str | bytes], env: dict[str, str], why: str
) -> None:
    with pytest.raises(SecretRefused, match=why) as refused:
        checked_secrets(secrets_, env)
    assert "long enough" not in str(refused.value)


def test_each_machines_order_gets_its_secrets_sealed_to_it_for_that_order() -> None:
    sealed = SealedSecrets(ExecBody("deploy"), {"DB_PASSWORD": b"correct horse"})
    assert sealed.refusal("shop", [machine(WEB)]) is None
    body = parse_body(OrderKind.EXEC, sealed.body("shop", machine(WEB), "order-1"))
    assert isinstance(body, ExecBody) and body.command == "deploy"
    context = secret_context("shop", WEB.id, "order-1", "DB_PASSWORD")
    assert unseal(WEB, body.secrets["DB_PASSWORD"], context) == b"correct horse"
    again = parse_body(OrderKind.EXEC, sealed.body("shop", machine(WEB), "order-1"))
    assert isinstance(again, ExecBody) and again.secrets != body.secrets  # a fresh ephemeral key every time


def test_a_machine_without_a_sealing_key_is_refused_with_how_to_give_it_one() -> None:
    sealed = SealedSecrets(ExecBody("deploy"), {"DB_PASSWORD": b"correct horse"})
    refusal = sealed.refusal("shop", [machine(WEB), machine(WEB, "")])
    assert refusal is not None and "has no sealing key" in refusal and "crc machine rotate-key shop web" in refusal
    assert "unusable sealing key" in (sealed.refusal("shop", [machine(WEB, "x25519:junk")]) or "")
