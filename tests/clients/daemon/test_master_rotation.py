"""A daemon follows master rotations once and never backwards (``clients.daemon.keys``): a TRUST_MASTER applied
at delivery and again in its turn, or one from an earlier rotation arriving late, cannot move it back to an older
master key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from clients.daemon import keys
from clients.daemon.config import DaemonConfig
from protocol import Identity, ProtocolError
from protocol.order_bodies import TrustMasterBody

A, B, C = (Identity.from_seed(bytes([n]) * 32) for n in (1, 2, 3))
MACHINE = Identity.from_seed(b"\x09" * 32)


def config() -> DaemonConfig:
    return DaemonConfig("ws://127.0.0.1:1", "shop", "db", MACHINE, A.public)


def test_a_rotation_applied_at_delivery_and_again_in_its_turn_never_undoes_a_later_one(tmp_path: Path) -> None:
    to_b, to_c = TrustMasterBody(B.public, 100), TrustMasterBody(C.public, 200)
    current = config()
    for body in (to_b, to_c):  # both delivered while db was offline: applied at delivery, in order
        current, moved = keys.follow_master_rotation(current, tmp_path, body.master_key, body.epoch)
        assert moved
    assert current.master_key == C.public
    for body in (to_b, to_c):  # their turns come: nothing moves, least of all back to B
        current, moved = keys.follow_master_rotation(current, tmp_path, body.master_key, body.epoch)
        assert not moved and current.master_key == C.public
    # and after a restart the daemon obeys C, as of rotation 200
    restarted = keys.current_config(config(), tmp_path)
    assert restarted.master_key == C.public and keys.master_epoch(restarted, tmp_path) == 200


def test_a_state_file_from_before_epochs_is_epoch_zero_and_any_rotation_moves_it(tmp_path: Path) -> None:
    (tmp_path / keys.MASTER).write_text(json.dumps({"machine": MACHINE.id, "master_public_key": B.public.to_text()}))
    old = keys.current_config(config(), tmp_path)
    assert old.master_key == B.public and keys.master_epoch(old, tmp_path) == 0
    moved_to, moved = keys.follow_master_rotation(old, tmp_path, C.public, 1)
    assert moved and moved_to.master_key == C.public


@pytest.mark.parametrize(
    "body",
    [
        {"master_public_key": B.public.to_text()},  # a master from before epochs
        {"master_public_key": B.public.to_text(), "epoch": 0},
        {"master_public_key": B.public.to_text(), "epoch": -5},
        {"master_public_key": B.public.to_text(), "epoch": True},
        {"master_public_key": B.public.to_text(), "epoch": "7"},
        {"master_public_key": "not a key", "epoch": 7},
    ],
)
def test_a_rotation_without_a_valid_epoch_or_key_is_refused(body: dict[str, object]) -> None:
    with pytest.raises(ProtocolError):
        TrustMasterBody.from_wire(body)


def test_a_master_cannot_sign_a_rotation_without_an_epoch() -> None:
    with pytest.raises(ProtocolError):
        TrustMasterBody(B.public, 0)
