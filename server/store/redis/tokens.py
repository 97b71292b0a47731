"""Access tokens on Redis (``TokenStore``): one hash ``P:token:ID`` each, and ``P:idx:tokens:<owner>``."""

from __future__ import annotations

from typing import Any

from server.store.interfaces import TokenStore
from server.store.records import StoreConflict, TokenRecord
from server.store.redis.base import RedisBase, _number, _pack, _text, _unpack, lua


class RedisTokens(RedisBase, TokenStore):
    _put_token = lua("put_token.lua")
    _revoke_token = lua("revoke_token.lua")
    _renew_token = lua("renew_token.lua")

    def _token_key(self, token_id: str) -> str:
        return f"{self.prefix}:token:{token_id}"

    @staticmethod
    def _token(token_id: str, row: dict[bytes, bytes]) -> TokenRecord | None:
        if b"owner" not in row:
            return None
        return TokenRecord(
            id=token_id, owner=_text(row[b"owner"]), role=_text(row[b"role"]), scenario=_text(row[b"scenario"]),
            secret_hash=_text(row[b"secret_hash"]), created=float(row[b"created"]), expires=float(row[b"expires"]),
            label=_text(row[b"label"]), delegation=_unpack(row.get(b"delegation"), None),
            sealed_key=row.get(b"sealed_key", b""), revoked=row.get(b"revoked") == b"1",
        )  # fmt: skip

    async def put_token(self, token: TokenRecord) -> None:
        fields: list[str | bytes] = [
            "owner", token.owner, "role", token.role, "scenario", token.scenario, "secret_hash", token.secret_hash,
            "created", _number(token.created), "expires", _number(token.expires), "label", token.label,
            "sealed_key", token.sealed_key, "revoked", "1" if token.revoked else "0",
        ]  # fmt: skip
        if token.delegation is not None:
            fields += ["delegation", _pack(token.delegation)]
        with self._errors():
            stored = await self._put_token(
                keys=[self._token_key(token.id), self._tokens_key(token.owner)], args=[token.id, *fields]
            )
        if not stored:
            raise StoreConflict(f"token id {token.id} is taken")

    async def token(self, token_id: str) -> TokenRecord | None:
        with self._errors():
            row = await self._hgetall(self._token_key(token_id))
        return self._token(token_id, row)

    async def tokens(self, owner: str) -> list[TokenRecord]:
        with self._errors():
            ids = await self._members(self._tokens_key(owner))
            rows = await self._hgetall_many([self._token_key(i) for i in ids])
        records = [self._token(i, row) for i, row in zip(ids, rows, strict=True)]
        return sorted((r for r in records if r is not None and r.owner == owner), key=lambda r: (r.created, r.id))

    async def revoke_token(self, owner: str, token_id: str) -> bool:
        with self._errors():
            revoked = await self._revoke_token(keys=[self._token_key(token_id)], args=[owner])
        return bool(revoked)

    async def renew_token(self, owner: str, token_id: str, delegation: dict[str, Any]) -> bool:
        with self._errors():
            renewed = await self._renew_token(keys=[self._token_key(token_id)], args=[owner, _pack(delegation)])
        return bool(renewed)
