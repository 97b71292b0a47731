"""Orders on Redis (``OrderStore``): ``P:{sc:S}:order:O`` hashes in submission order, file chunks, and each
machine's inbox stream of its queued orders."""

from __future__ import annotations

from typing import Any, cast

from protocol import OrderState
from protocol.orders import sources as order_sources
from server.store.interfaces import OrderStore
from server.store.records import OrderRecord, StoreConflict, StoreError
from server.store.redis.base import RedisBase, _number, _pack, _text, _unpack, lua


class RedisOrders(RedisBase, OrderStore):
    _add_order = lua("add_order.lua")
    _set_order_state = lua("keys.lua", "order.lua", "set_order_state.lua")
    _store_result = lua("keys.lua", "order.lua", "store_result.lua")

    @staticmethod
    def _order(order_id: str, scenario_id: str, row: dict[bytes, bytes]) -> OrderRecord | None:
        if b"state" not in row:
            return None
        return OrderRecord(
            id=order_id, scenario_id=scenario_id, machine_id=_text(row[b"machine"]), kind=_text(row[b"kind"]),
            order=_unpack(row[b"body"], {}), state=OrderState(_text(row[b"state"])),
            created=float(row[b"created"]), updated=float(row[b"updated"]), result=_unpack(row.get(b"result"), None),
        )  # fmt: skip

    async def add_order(self, order: OrderRecord, chunks: list[bytes]) -> None:
        sc, machine = order.scenario_id, order.machine_id
        keys = [
            self._order_index, self._sc(sc, "meta"), self._sc(sc, "orders"), self._sc(sc, f"order:{order.id}"),
            self._sc(sc, f"chunks:{order.id}"), self._sc(sc, f"inbox:{machine}"), self._sc(sc, "inboxes"),
        ]  # fmt: skip
        args: list[str | bytes | int] = [
            order.id, sc, machine, order.kind, _pack(order.order), order.state.value,
            _number(order.created), _number(order.updated), self.inbox_max, len(chunks), *chunks,
        ]  # fmt: skip
        with self._errors():
            reply = await self._add_order(keys=keys, args=args)
        if reply[0] == 1:
            raise StoreConflict(f"order id {order.id} was used before")
        if reply[0] == 2:
            raise StoreError(f"scenario {sc} does not exist (deleted?)")
        if reply[0] == 3:
            raise StoreError(f"machine {machine} already has {self.inbox_max} queued orders (the store's inbox_max)")

    async def _order_scenario(self, order_id: str) -> str | None:
        scenario_id = await self._hget(self._order_index, order_id)
        return None if scenario_id is None else _text(scenario_id)

    async def order(self, order_id: str) -> OrderRecord | None:
        with self._errors():
            sc = await self._order_scenario(order_id)
            if sc is None:
                return None
            row = await self._hgetall(self._sc(sc, f"order:{order_id}"))
        return self._order(order_id, sc, row)

    async def order_chunks(self, order_id: str) -> list[bytes]:
        with self._errors():
            sc = await self._order_scenario(order_id)
            if sc is None:
                return []
            chunks = cast("list[bytes]", await self._redis.lrange(self._sc(sc, f"chunks:{order_id}"), 0, -1))
        return chunks

    async def orders(self, scenario_id: str, order_ids: list[str] | None = None) -> list[OrderRecord]:
        with self._errors():
            if order_ids:
                ids = list(dict.fromkeys(order_ids))
            else:
                listed = cast("list[bytes]", await self._redis.zrange(self._sc(scenario_id, "orders"), 0, -1))
                ids = [_text(o) for o in listed]
            rows = await self._hgetall_many([self._sc(scenario_id, f"order:{o}") for o in ids])
        found = [(row, self._order(o, scenario_id, row)) for o, row in zip(ids, rows, strict=True)]
        ordered = sorted((int(row[b"seq"]), record) for row, record in found if record is not None)
        return [record for _, record in ordered]

    async def queued_orders(self, machine_id: str) -> list[OrderRecord]:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return []
            sc = _text(scenario_id)
            inbox = self._sc(sc, f"inbox:{machine_id}")
            entries = await self._xrange(inbox)
            ids = [_text(fields[b"order"]) for _, fields in entries]
            rows = await self._hgetall_many([self._sc(sc, f"order:{o}") for o in ids])
            queued: list[OrderRecord] = []
            stale: list[bytes] = []
            for (entry, _), order_id, row in zip(entries, ids, rows, strict=True):
                record = self._order(order_id, sc, row)
                if record is not None and record.state is OrderState.QUEUED:
                    queued.append(record)
                else:
                    stale.append(entry)
            if stale:  # orders that left the queue without leaving the inbox: keep it short
                await self._redis.xdel(inbox, *stale)
        return queued

    async def queued_count(self, machine_id: str) -> int:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return 0
            return int(await self._redis.xlen(self._sc(_text(scenario_id), f"inbox:{machine_id}")))

    async def set_order_state(self, order_id: str, state: OrderState, now: float) -> bool:
        earlier = sorted(s.value for s in order_sources(state))
        if state.final or not earlier:
            return False  # queued is where orders start; final states come with a result (store_result)
        with self._errors():
            moved = await self._set_order_state(
                keys=[self._order_index], args=[self.prefix, order_id, state.value, _number(now), *earlier]
            )
        return bool(moved)

    async def store_result(self, order_id: str, state: OrderState, result: dict[str, Any], now: float) -> bool:
        with self._errors():
            stored = await self._store_result(
                keys=[self._order_index], args=[self.prefix, order_id, state.value, _number(now), _pack(result)]
            )
        return bool(stored)
