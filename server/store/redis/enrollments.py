"""Enrollment tokens on Redis (``EnrollmentStore``): ``P:{sc:S}:enroll:ID`` hashes (claims, signature, uses,
expiry, revoked), the registrations of the machines that joined in ``P:{sc:S}:enroll:ID:registrations``, and the
scenario's tokens by creation in ``P:{sc:S}:enrollments``. A join is one script (check, add the machine, count the
use), so two replicas can never both take a token's last use."""

from __future__ import annotations

from typing import Any, cast

from server.store.interfaces import EnrollmentStore
from server.store.records import EnrollmentRecord, EnrollOutcome, MachineSpec, StoreConflict
from server.store.redis.base import RedisBase, _number, _pack, _text, _unpack, lua, machine_args

_OUTCOMES = {0: EnrollOutcome.ENROLLED, 10: EnrollOutcome.NO_TOKEN, 11: EnrollOutcome.REVOKED,
             12: EnrollOutcome.EXPIRED, 13: EnrollOutcome.USED_UP}  # fmt: skip


class RedisEnrollments(RedisBase, EnrollmentStore):
    _put_enrollment = lua("put_enrollment.lua")
    _enroll_machine = lua("keys.lua", "machine_specs.lua", "enroll_machine.lua")

    def _token_keys(self, scenario_id: str, token_id: str) -> tuple[str, str]:
        token = self._sc(scenario_id, f"enroll:{token_id}")
        return token, f"{token}:registrations"

    async def put_enrollment(self, record: EnrollmentRecord) -> bool:
        token, _ = self._token_keys(record.scenario_id, record.id)
        keys = [self._sc(record.scenario_id, "meta"), self._sc(record.scenario_id, "enrollments"), token]
        args: list[str | bytes] = [
            record.id, _pack(record.claims), record.signature, str(record.uses), _number(record.expires),
            _number(record.created),
        ]  # fmt: skip
        with self._errors():
            reply = await self._put_enrollment(keys=keys, args=args)
        if int(reply) == 2:
            raise StoreConflict(f"an enrollment token {record.id} exists already")
        return int(reply) == 0

    async def enrollments(self, scenario_id: str) -> list[EnrollmentRecord]:
        with self._errors():
            ids = [
                _text(i)
                for i in cast("list[bytes]", await self._redis.zrange(self._sc(scenario_id, "enrollments"), 0, -1))
            ]
            records = []
            for token_id in ids:
                token, registrations = self._token_keys(scenario_id, token_id)
                row = await self._hgetall(token)
                if not row:
                    continue
                stored = cast("list[bytes]", await self._redis.lrange(registrations, 0, -1))
                joined = [_unpack(r, {}) for r in stored]
                records.append(EnrollmentRecord(
                    token_id, scenario_id, _unpack(row[b"claims"], {}), row[b"signature"], int(row[b"uses"]),
                    float(row[b"expires"]), float(row[b"created"]), row.get(b"revoked") == b"1", joined,
                ))  # fmt: skip
        return records

    async def revoke_enrollment(self, scenario_id: str, token_id: str) -> bool:
        token, _ = self._token_keys(scenario_id, token_id)
        with self._errors():
            if not await self._redis.exists(token):
                return False
            await self._redis.hset(token, "revoked", "1")
        return True

    async def enroll_machine(
        self, scenario_id: str, token_id: str, machine: MachineSpec, registration: dict[str, Any], now: float
    ) -> EnrollOutcome:
        token, registrations = self._token_keys(scenario_id, token_id)
        keys = [self._machine_index, self._sc(scenario_id, "meta"), self._sc(scenario_id, "machines"), token,
                registrations, self._sc(scenario_id, f"machine:{machine.id}")]  # fmt: skip
        args = [self.prefix, scenario_id, _number(now), _pack(registration), *machine_args([machine])]
        with self._errors():
            reply = await self._enroll_machine(keys=keys, args=args)
        if reply[0] == 2:
            raise StoreConflict(f"machine key {_text(reply[1])} already belongs to a scenario")
        if reply[0] == 3:
            raise StoreConflict(f"the scenario has a machine named {_text(reply[1])!r} already")
        return _OUTCOMES[int(reply[0])]
