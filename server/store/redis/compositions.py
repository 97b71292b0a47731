"""Compositions on Redis (``CompositionStore``): one hash per scenario, ``P:{sc:S}:compositions`` (id -> the
record, msgpack), in the scenario's slot and deleted with it."""

from __future__ import annotations

from typing import cast

from server.store.interfaces import CompositionStore
from server.store.records import CompositionRecord
from server.store.redis.base import RedisBase, _pack, _text, _unpack, lua


class RedisCompositions(RedisBase, CompositionStore):
    _put_composition = lua("put_composition.lua")

    async def put_composition(self, record: CompositionRecord) -> bool:
        keys = [self._sc(record.scenario_id, "meta"), self._sc(record.scenario_id, "compositions")]
        blob = _pack({"composition": record.composition, "created": record.created})
        with self._errors():
            reply = await self._put_composition(keys=keys, args=[record.id, blob])
        return int(reply) == 0

    async def compositions(self, scenario_id: str) -> list[CompositionRecord]:
        with self._errors():
            rows = await self._hgetall(self._sc(scenario_id, "compositions"))
        records = []
        for key, blob in rows.items():
            stored = cast("dict[str, object]", _unpack(blob, {}))
            composition, created = stored.get("composition"), stored.get("created")
            if isinstance(composition, dict) and isinstance(created, int | float):
                records.append(CompositionRecord(_text(key), scenario_id, composition, float(created)))
        return sorted(records, key=lambda r: (r.created, r.id))

    async def remove_composition(self, scenario_id: str, composition_id: str) -> bool:
        with self._errors():
            removed = await self._redis.hdel(self._sc(scenario_id, "compositions"), composition_id)
        return int(removed) > 0
