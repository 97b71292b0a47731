"""Orders in SQLite (``OrderStore``): the ``orders`` table in submission order (``seq``) and ``order_chunks``."""

from __future__ import annotations

from typing import Any

from protocol import OrderState
from protocol.orders import sources as order_sources
from server.store.interfaces import OrderStore
from server.store.records import OrderRecord
from server.store.sqlite.base import SqliteBase, _pack, _unpack


class SqliteOrders(SqliteBase, OrderStore):
    _ORDER_COLUMNS = "id, scenario_id, machine_id, kind, body, state, created, updated, result"

    @staticmethod
    def _order(row: tuple[Any, ...]) -> OrderRecord:
        return OrderRecord(
            id=row[0], scenario_id=row[1], machine_id=row[2], kind=row[3], order=_unpack(row[4], {}),
            state=OrderState(row[5]), created=row[6], updated=row[7], result=_unpack(row[8], None),
        )  # fmt: skip

    async def add_order(self, order: OrderRecord, chunks: list[bytes]) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO orders (id, scenario_id, machine_id, kind, body, state, created, updated) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    order.id, order.scenario_id, order.machine_id, order.kind, _pack(order.order),
                    order.state.value, order.created, order.updated,
                ),
            )  # fmt: skip
            db.executemany(
                "INSERT INTO order_chunks VALUES (?, ?, ?)", [(order.id, i, c) for i, c in enumerate(chunks)]
            )

    async def order(self, order_id: str) -> OrderRecord | None:
        row = self._read(
            lambda db: db.execute(f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE id = ?", (order_id,)).fetchone()
        )
        return None if row is None else self._order(row)

    async def order_chunks(self, order_id: str) -> list[bytes]:
        rows = self._read(
            lambda db: db.execute(
                "SELECT data FROM order_chunks WHERE order_id = ? ORDER BY idx", (order_id,)
            ).fetchall()
        )
        return [row[0] for row in rows]

    async def orders(self, scenario_id: str, order_ids: list[str] | None = None) -> list[OrderRecord]:
        sql = f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE scenario_id = ?"
        params: list[Any] = [scenario_id]
        if order_ids:
            sql += f" AND id IN ({','.join('?' * len(order_ids))})"
            params += order_ids
        rows = self._read(lambda db: db.execute(sql + " ORDER BY seq", params).fetchall())
        return [self._order(row) for row in rows]

    async def queued_orders(self, machine_id: str) -> list[OrderRecord]:
        rows = self._read(
            lambda db: db.execute(
                f"SELECT {self._ORDER_COLUMNS} FROM orders WHERE machine_id = ? AND state = ? ORDER BY seq",
                (machine_id, OrderState.QUEUED.value),
            ).fetchall()
        )
        return [self._order(row) for row in rows]

    async def queued_count(self, machine_id: str) -> int:
        query = "SELECT COUNT(*) FROM orders WHERE machine_id = ? AND state = ?"
        row = self._read(lambda db: db.execute(query, (machine_id, OrderState.QUEUED.value)).fetchone())
        return int(row[0])

    async def set_order_state(self, order_id: str, state: OrderState, now: float) -> bool:
        earlier = sorted(s.value for s in order_sources(state))
        if state.final or not earlier:
            return False  # queued is where orders start; final states come with a result (store_result)
        placeholders = ",".join("?" * len(earlier))
        with self._tx() as db:
            cur = db.execute(
                f"UPDATE orders SET state = ?, updated = ? WHERE id = ? AND state IN ({placeholders})",
                (state.value, now, order_id, *earlier),
            )
            return cur.rowcount == 1

    async def store_result(self, order_id: str, state: OrderState, result: dict[str, Any], now: float) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE orders SET state = ?, updated = ?, result = ? WHERE id = ? AND result IS NULL",
                (state.value, now, _pack(result), order_id),
            )
            if cur.rowcount == 1:
                db.execute("DELETE FROM order_chunks WHERE order_id = ?", (order_id,))
            return cur.rowcount == 1
