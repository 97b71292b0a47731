"""Scenarios on Redis (``ScenarioStore``): ``P:{sc:S}:meta``, the owner's name index, and every key of a
scenario (created with its machines, deleted with all it holds)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from server.store.interfaces import ScenarioStore
from server.store.records import MachineSpec, ScenarioRecord, StoreConflict
from server.store.redis.base import RedisBase, _number, _text, lua, machine_args


class RedisScenarios(RedisBase, ScenarioStore):
    _create = lua("keys.lua", "machine_specs.lua", "create_scenario.lua")
    _delete = lua("keys.lua", "delete_scenario.lua")
    _add_machines = lua("keys.lua", "machine_specs.lua", "add_machines.lua")

    async def create_scenario(self, owner: str, name: str, machines: list[MachineSpec], now: float) -> ScenarioRecord:
        record = ScenarioRecord(uuid.uuid4().hex, owner, name, float(now))
        ids = [m.id for m in machines]
        if len(set(ids)) != len(ids):
            raise StoreConflict("a machine key appears twice in the scenario")
        if len({m.name for m in machines}) != len(machines):
            raise StoreConflict("two machines of the scenario have the same name")
        args: list[str | bytes] = [self.prefix, record.id, owner, name, _number(now), *machine_args(machines)]
        keys = [
            f"{self.prefix}:idx:owner:{owner}",
            self._machine_index,
            self._sc(record.id, "meta"),
            self._sc(record.id, "machines"),
        ] + [self._sc(record.id, f"machine:{machine_id}") for machine_id in ids]
        with self._errors():
            reply = await self._create(keys=keys, args=args)
        if reply[0] == 1:
            raise StoreConflict(f"{owner} already has a scenario named {name!r}")
        if reply[0] == 2:
            raise StoreConflict(f"machine key {_text(reply[1])} already belongs to a scenario")
        return record

    async def add_machines(self, scenario_id: str, machines: list[MachineSpec]) -> bool:
        ids = [m.id for m in machines]
        if len(set(ids)) != len(ids) or len({m.name for m in machines}) != len(machines):
            raise StoreConflict("a machine key or name appears twice among the machines added")
        keys = [self._machine_index, self._sc(scenario_id, "meta"), self._sc(scenario_id, "machines")]
        keys += [self._sc(scenario_id, f"machine:{machine_id}") for machine_id in ids]
        with self._errors():
            reply = await self._add_machines(keys=keys, args=[self.prefix, scenario_id, *machine_args(machines)])
        if reply[0] == 1:
            return False
        if reply[0] == 2:
            raise StoreConflict(f"machine key {_text(reply[1])} already belongs to a scenario")
        if reply[0] == 3:
            raise StoreConflict(f"the scenario has a machine named {_text(reply[1])!r} already")
        return True

    @staticmethod
    def _scenario(scenario_id: str, fields: Sequence[bytes | None]) -> ScenarioRecord | None:
        owner, name, created = fields
        if owner is None or name is None or created is None:
            return None
        return ScenarioRecord(scenario_id, _text(owner), _text(name), float(created))

    async def scenarios(self, owner: str) -> list[ScenarioRecord]:
        with self._errors():
            names = await self._hgetall(f"{self.prefix}:idx:owner:{owner}")
            ids = [_text(i) for i in names.values()]
            rows = await self._many("HMGET", [self._sc(i, "meta") for i in ids], "owner", "name", "created")
        records = [self._scenario(i, row) for i, row in zip(ids, rows, strict=True)]
        return sorted((r for r in records if r is not None), key=lambda r: (r.created, r.name))

    async def scenario_by_name(self, owner: str, name: str) -> ScenarioRecord | None:
        with self._errors():
            scenario_id = await self._hget(f"{self.prefix}:idx:owner:{owner}", name)
        return None if scenario_id is None else await self.scenario(_text(scenario_id))

    async def scenario(self, scenario_id: str) -> ScenarioRecord | None:
        with self._errors():
            fields = await self._hmget(self._sc(scenario_id, "meta"), ["owner", "name", "created"])
        return self._scenario(scenario_id, fields)

    async def delete_scenario(self, scenario_id: str) -> list[str]:
        with self._errors():
            machine_ids = await self._delete(
                keys=[self._machine_index, self._order_index, self._present], args=[self.prefix, scenario_id]
            )
        return [_text(m) for m in machine_ids]
