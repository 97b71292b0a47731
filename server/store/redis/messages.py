"""Scenario messages on Redis (``MessageStore``): one stream per mailbox, ``P:{sc:S}:mail:M``."""

from __future__ import annotations

from server.store.interfaces import MessageStore
from server.store.records import MessageRecord
from server.store.redis.base import RedisBase, _number, _text

SEQ_SPLIT = 1_000_000  # a mailbox message's seq: stream id <ms>-<n> as ms * SEQ_SPLIT + n


class RedisMessages(RedisBase, MessageStore):
    async def post_message(
        self, scenario_id: str, machine_ids: list[str], topic: str, sender: str, data: bytes, now: float
    ) -> None:
        with self._errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                for machine_id in machine_ids:
                    fields = {"topic": topic, "sender": sender, "data": data, "ts": _number(now)}
                    pipe.xadd(self._sc(scenario_id, f"mail:{machine_id}"), fields)  # type: ignore[arg-type]
                    pipe.sadd(self._sc(scenario_id, "mailboxes"), machine_id)
                await pipe.execute()

    async def messages_after(self, machine_id: str, after: int, topic: str, limit: int) -> list[MessageRecord]:
        with self._errors():
            scenario_id = await self._hget(self._machine_index, machine_id)
            if scenario_id is None:
                return []
            key = self._sc(_text(scenario_id), f"mail:{machine_id}")
            found: list[MessageRecord] = []
            # Stream ids are <ms>-<n>; a message's seq packs both, so seqs order a mailbox like its ids.
            start = f"({after // SEQ_SPLIT}-{after % SEQ_SPLIT}" if after else "-"
            while len(found) < limit:
                entries = await self._xrange(key, start, count=max(limit, 100))
                if not entries:
                    break
                for entry_id, fields in entries:
                    ms, n = (int(part) for part in _text(entry_id).split("-"))
                    kind, sender = _text(fields[b"topic"]), _text(fields[b"sender"])
                    if not topic or kind == topic:
                        found.append(
                            MessageRecord(ms * SEQ_SPLIT + n, kind, sender, fields[b"data"], float(fields[b"ts"]))
                        )
                start = f"({_text(entries[-1][0])}"
        return found[:limit]
