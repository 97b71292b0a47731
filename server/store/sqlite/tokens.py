"""Access tokens in SQLite (``TokenStore``): the ``tokens`` table."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import TokenStore
from server.store.records import TokenRecord
from server.store.sqlite.base import SqliteBase, _pack, _unpack


class SqliteTokens(SqliteBase, TokenStore):
    _TOKEN_COLUMNS = "id, owner, role, scenario, secret_hash, created, expires, label, delegation, sealed_key, revoked"

    @staticmethod
    def _token(row: tuple[Any, ...]) -> TokenRecord:
        return TokenRecord(
            id=row[0], owner=row[1], role=row[2], scenario=row[3], secret_hash=row[4], created=row[5],
            expires=row[6], label=row[7], delegation=_unpack(row[8], None), sealed_key=bytes(row[9]),
            revoked=bool(row[10]),
        )  # fmt: skip

    async def put_token(self, token: TokenRecord) -> None:
        with self._tx() as db:
            db.execute(
                f"INSERT INTO tokens ({self._TOKEN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    token.id, token.owner, token.role, token.scenario, token.secret_hash, token.created,
                    token.expires, token.label, None if token.delegation is None else _pack(token.delegation),
                    token.sealed_key, int(token.revoked),
                ),
            )  # fmt: skip

    async def token(self, token_id: str) -> TokenRecord | None:
        query = f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE id = ?"
        row = self._read(lambda db: db.execute(query, (token_id,)).fetchone())
        return None if row is None else self._token(row)

    async def tokens(self, owner: str) -> list[TokenRecord]:
        query = f"SELECT {self._TOKEN_COLUMNS} FROM tokens WHERE owner = ? ORDER BY created, id"
        return [self._token(row) for row in self._read(lambda db: db.execute(query, (owner,)).fetchall())]

    async def revoke_token(self, owner: str, token_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET revoked = 1, sealed_key = ? WHERE id = ? AND owner = ?", (b"", token_id, owner)
            )
            return cur.rowcount == 1

    async def renew_token(self, owner: str, token_id: str, delegation: dict[str, Any]) -> bool:
        with self._tx() as db:
            cur = db.execute(
                "UPDATE tokens SET delegation = ? WHERE id = ? AND owner = ? AND revoked = 0",
                (_pack(delegation), token_id, owner),
            )
            return cur.rowcount == 1
