"""Compositions as the master signs them and daemons check them: every field is bound by the signature, a member
order's id is fixed per machine, and only a machine the target selects (by facts its master vouched for) plays."""

from __future__ import annotations

from dataclasses import replace

import pytest

from protocol import ErrorCode, Identity, OrderKind, ProtocolError
from protocol.certificates import MachineCertificate
from protocol.compositions import (
    NEVER,
    Composition,
    Member,
    MemberOrder,
    certified_member,
    check_member_order,
    is_member_order,
)

MASTER = Identity.from_seed(b"\x01" * 32)
MACHINE = Identity.from_seed(b"\x02" * 32)
T0 = 1_800_000_000.0
WEB = Member("web1", "web", {"tier": "front"})


def made(**changes: object) -> Composition:
    base = Composition("c1", MASTER.id, "shop", "role:web", {"command": "tune", "job": "tune", "job_version": 3}, T0)
    return replace(base, **changes).signed(MASTER)  # type: ignore[arg-type]


def check(composition: Composition, *, member: Member | None = WEB, now: float = T0, machine: str = MACHINE.id
          ) -> None:  # fmt: skip
    check_member_order(MemberOrder(composition, machine), MASTER.public, MACHINE.id, "shop", now, certified=member,
                       enrolled=None)  # fmt: skip


def test_a_composition_round_trips_and_names_its_job() -> None:
    composition = made(expires=T0 + 60)
    assert Composition.from_wire(composition.to_wire()) == composition
    assert (composition.job, composition.job_version, composition.valid_until) == ("tune", 3, T0 + 60)
    assert made().valid_until == NEVER


@pytest.mark.parametrize(
    "change",
    [
        {"id": "c2"},
        {"scenario": "lab"},
        {"target": "all"},
        {"body": {"command": "evil"}},
        {"created": T0 + 1},
        {"expires": T0 + 999},
    ],
    ids=["id", "scenario", "target", "body", "created", "expires"],
)
def test_every_field_is_bound_by_the_signature(change: dict[str, object]) -> None:
    altered = replace(made(), **change)  # type: ignore[arg-type]
    with pytest.raises(ProtocolError) as caught:
        altered.verify(MASTER.public, str(change.get("scenario", "shop")))
    assert caught.value.code is ErrorCode.BAD_SIGNATURE


def test_the_play_is_the_composition_on_this_machine_with_one_id() -> None:
    order = MemberOrder(made(), MACHINE.id).as_order()
    assert (order.id, order.machine, order.kind, order.body["command"]) == (f"c1.{MACHINE.id}", MACHINE.id,
                                                                             OrderKind.EXEC, "tune")  # fmt: skip
    assert order.expires == NEVER and order.master == MASTER.id
    wire = MemberOrder(made(), MACHINE.id, {"name": "x"}).to_wire()
    assert is_member_order(wire) and not is_member_order(order.to_wire())
    assert MemberOrder.from_wire(wire) == MemberOrder(made(), MACHINE.id, {"name": "x"})


@pytest.mark.parametrize(
    ("target", "selected"),
    [("role:web", True), ("role:db", False), ("label:tier=front", True), ("label:tier", True),
     ("label:tier=back", False), ("web1", True), ("db", False), ("web*", True), ("db,role:web", True), ("all", True)],
)  # fmt: skip
def test_only_a_machine_the_target_selects_is_a_member(target: str, selected: bool) -> None:
    assert made(target=target).admits(WEB) is selected


def test_a_member_order_is_refused_unless_it_verifies_selects_this_machine_and_is_live() -> None:
    check(made())
    refusals = [
        (made(target="role:db"), {}, ErrorCode.WRONG_TARGET),
        (made(), {"member": None}, ErrorCode.WRONG_TARGET),
        (made(), {"machine": "someone-else"}, ErrorCode.WRONG_TARGET),
        (made(scenario="lab"), {}, ErrorCode.WRONG_TARGET),
        (made(expires=T0 - 1), {}, ErrorCode.EXPIRED),
        (made(expires=float("nan")), {}, ErrorCode.EXPIRED),
        (replace(made(), master="x"), {}, ErrorCode.BAD_SIGNATURE),
    ]
    for composition, options, code in refusals:
        with pytest.raises(ProtocolError) as caught:
            check(composition, **options)  # type: ignore[arg-type]
        assert caught.value.code is code, (composition, options)


def test_a_certificate_counts_only_as_the_masters_word_on_this_machine() -> None:
    key = MACHINE.public
    cert = MachineCertificate("shop", "web1", key.id, key.to_text(), "linux", "web", {"tier": "front"})
    assert certified_member(cert.endorsed(MASTER).to_wire(), MASTER.public, "shop", MACHINE.id) == WEB
    other = Identity.from_seed(b"\x03" * 32)
    assert certified_member(cert.endorsed(other).to_wire(), MASTER.public, "shop", MACHINE.id) is None
    assert certified_member(cert.endorsed(MASTER).to_wire(), MASTER.public, "lab", MACHINE.id) is None
    assert certified_member(cert.endorsed(MASTER).to_wire(), MASTER.public, "shop", other.id) is None
    assert certified_member({"name": "junk"}, MASTER.public, "shop", MACHINE.id) is None
    assert certified_member(None, MASTER.public, "shop", MACHINE.id) is None


@pytest.mark.parametrize(
    "broken",
    [None, [], {"id": "c1"}, {**made().to_wire(), "body": "x"}, {**made().to_wire(), "created": "now"},
     {**made().to_wire(), "expires": True}, {**made().to_wire(), "signature": "sig"}, {**made().to_wire(), "id": ""}],
)  # fmt: skip
def test_a_malformed_composition_is_refused_naming_what_is_wrong(broken: object) -> None:
    with pytest.raises(ProtocolError) as caught:
        Composition.from_wire(broken)
    assert caught.value.code is ErrorCode.BAD_FIELD
