"""Masters on Redis (``MasterStore``): ``P:masters`` (id -> record by name) and ``P:idx:master-names``."""

from __future__ import annotations

from server.store.codec import decode_record, encode_record
from server.store.interfaces import MasterStore
from server.store.records import MachineSpec, MasterRecord, StoreConflict
from server.store.redis.base import RedisBase, _text, lua

# The positional layout masters had before the codec, frozen: the class's fields may change, this never does.
MASTER_LAYOUT = ("id", "name", "public_key", "created")


class RedisMasters(RedisBase, MasterStore):
    _enroll = lua("enroll_master.lua")
    _rekey_master = lua("rekey_master.lua")
    _drop_tokens = lua("drop_tokens.lua")  # a removed master's tokens go with it

    async def enroll_master(self, name: str, public_key: str, now: float) -> MasterRecord:
        master_id = MachineSpec(name, "", "", public_key).id
        record = MasterRecord(master_id, name, public_key, float(now))
        with self._errors():
            reply = await self._enroll(
                keys=[self._masters, self._master_names],
                args=[name, master_id, encode_record(record)],
            )
        if reply[0] == 1:
            known = await self._master(reply[1])
            if known.public_key != public_key:
                raise StoreConflict(f"a master named {name!r} is enrolled with another key")
            return known
        if reply[0] == 2:
            raise StoreConflict(f"the key of master {name!r} is already enrolled under another name")
        return record

    async def _master(self, blob: bytes) -> MasterRecord:
        """A master read without its id at hand (an enroll's reply): the hash field is the id it holds."""
        record = decode_record(MasterRecord, blob, legacy=MASTER_LAYOUT)
        await self._rewrite_positional(self._masters, record.id, blob, record)
        return record

    async def master(self, master_id: str) -> MasterRecord | None:
        with self._errors():
            packed = await self._hget(self._masters, master_id)
        return (
            None
            if packed is None
            else await self._stored(MasterRecord, self._masters, master_id, packed, MASTER_LAYOUT)
        )

    async def master_by_name(self, name: str) -> MasterRecord | None:
        with self._errors():
            master_id = await self._hget(self._master_names, name)
        return None if master_id is None else await self.master(_text(master_id))

    async def rekey_master(self, master_id: str, public_key: str) -> MasterRecord | None:
        old = await self.master(master_id)
        if old is None:
            return None
        record = MasterRecord(MachineSpec("", "", "", public_key).id, old.name, public_key, old.created)
        packed = encode_record(record)
        with self._errors():
            moved = await self._rekey_master(
                keys=[self._masters, self._master_names], args=[self.prefix, master_id, record.id, packed, old.name]
            )
        if moved == 2:
            raise StoreConflict("the new master key is enrolled already")
        return record if moved == 1 else None

    async def remove_master(self, name: str) -> MasterRecord | None:
        with self._errors():
            master_id = await self._hget(self._master_names, name)
            if master_id is None:
                return None
            packed = await self._hget(self._masters, _text(master_id))
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._master_names, name)
                pipe.hdel(self._masters, _text(master_id))
                await self._drop_tokens(keys=[self._tokens_key(_text(master_id))], args=[self.prefix], client=pipe)
                await pipe.execute()
        return None if packed is None else decode_record(MasterRecord, packed, legacy=MASTER_LAYOUT)
