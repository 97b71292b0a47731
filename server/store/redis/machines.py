"""Machines on Redis (``MachineStore``): ``P:{sc:S}:machine:M`` hashes, ``P:idx:machines`` and ``P:present``."""

from __future__ import annotations

from typing import Any

from redis.exceptions import WatchError

from server.store.interfaces import MachineStore
from server.store.records import MachineRecord, MachineStatus
from server.store.redis.base import RedisBase, _number, _pack, _text, _unpack, lua


class RedisMachines(RedisBase, MachineStore):
    _update_machine = lua("keys.lua", "update_machine.lua")
    _delete_machine = lua("keys.lua", "delete_machine.lua")
    _reset_presence = lua("keys.lua", "reset_presence.lua")
    _certify = lua("certify_machine.lua")

    @staticmethod
    def _machine(machine_id: str, scenario_id: str, row: dict[bytes, bytes]) -> MachineRecord | None:
        if b"name" not in row:
            return None
        last_seen = row.get(b"last_seen")
        return MachineRecord(
            id=machine_id, scenario_id=scenario_id, name=_text(row[b"name"]), os=_text(row[b"os"]),
            role=_text(row[b"role"]), public_key=_text(row[b"public_key"]),
            status=MachineStatus(_text(row[b"status"])), facts=_unpack(row.get(b"facts"), {}),
            ips=_unpack(row.get(b"ips"), []), last_seen=None if last_seen is None else float(last_seen),
            report_key=_text(row.get(b"report_key", b"")), former_keys=_unpack(row.get(b"former_keys"), []),
            labels=_unpack(row.get(b"labels"), {}), certificate=_unpack(row.get(b"certificate"), None),
            key_proofs=_unpack(row.get(b"key_proofs"), []), ready_proof=_unpack(row.get(b"ready_proof"), None),
        )  # fmt: skip

    async def machine(self, machine_id: str) -> MachineRecord | None:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return None
            sc = _text(scenario_id)
            row = await self._hgetall(self._sc(sc, f"machine:{machine_id}"))
        return self._machine(machine_id, sc, row)

    async def machines(self, scenario_id: str) -> list[MachineRecord]:
        with self._errors():
            ids = sorted(await self._members(self._sc(scenario_id, "machines")))
            rows = await self._hgetall_many([self._sc(scenario_id, f"machine:{m}") for m in ids])
        records = [self._machine(m, scenario_id, row) for m, row in zip(ids, rows, strict=True)]
        return sorted((r for r in records if r is not None), key=lambda r: r.name)

    async def update_machine(
        self,
        machine_id: str,
        *,
        status: MachineStatus,
        last_seen: float,
        facts: dict[str, Any] | None = None,
        ips: list[str] | None = None,
        ready_proof: dict[str, Any] | None = None,
    ) -> None:
        args = [
            self.prefix, machine_id, status.value, _number(last_seen),
            b"" if facts is None else _pack(facts), b"" if ips is None else _pack(ips),
            b"" if ready_proof is None else _pack(ready_proof),
        ]  # fmt: skip
        with self._errors():
            await self._update_machine(keys=[self._machine_index, self._present], args=args)

    async def reset_presence(self, now: float) -> int:
        with self._errors():
            count = await self._reset_presence(keys=[self._present, self._machine_index], args=[self.prefix])
        return int(count)

    async def delete_machine(self, machine_id: str) -> bool:
        with self._errors():
            deleted = await self._delete_machine(
                keys=[self._machine_index, self._present], args=[self.prefix, machine_id]
            )
        return bool(deleted)

    async def rotate_machine_key(
        self, machine_id: str, public_key: str, report_key: str, proof: dict[str, Any] | None = None
    ) -> MachineRecord | None:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return None
            key = self._sc(_text(scenario_id), f"machine:{machine_id}")
            for _ in range(10):  # optimistic: WATCH the machine, retry if another replica wrote it meanwhile
                try:
                    async with self._redis.pipeline(transaction=True) as pipe:
                        await pipe.watch(key)
                        old_key, packed, packed_proofs = await pipe.hmget(
                            key, ["public_key", "former_keys", "key_proofs"]
                        )
                        if old_key is None:
                            return None
                        assert isinstance(old_key, bytes) and (packed is None or isinstance(packed, bytes))
                        assert packed_proofs is None or isinstance(packed_proofs, bytes)
                        former = [*_unpack(packed, []), _text(old_key)]
                        proofs = [*_unpack(packed_proofs, []), *([proof] if proof is not None else [])]
                        pipe.multi()  # type: ignore[no-untyped-call]
                        pipe.hset(key, mapping={"public_key": public_key, "report_key": report_key,
                                                "former_keys": _pack(former), "key_proofs": _pack(proofs)})  # fmt: skip
                        await pipe.execute()
                        break
                except WatchError:
                    continue
        return await self.machine(machine_id)

    async def certify_machine(self, machine_id: str, certificate: dict[str, Any]) -> bool:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return False
            key = self._sc(_text(scenario_id), f"machine:{machine_id}")
            # HSET only where the machine hash still exists: a concurrent delete must not leave a stub behind.
            updated = await self._certify(keys=[key], args=[_pack(certificate)])
        return bool(updated)
