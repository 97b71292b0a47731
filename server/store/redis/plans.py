"""Plans on Redis (``PlanStore``): ``P:{sc:S}:plan:ID`` (the record by name), its indexes, and plan leases."""

from __future__ import annotations

from typing import cast

from server.store.codec import decode_record, encode_record
from server.store.interfaces import PlanStore
from server.store.records import PlanRecord
from server.store.redis.base import RedisBase, _text, lua


class RedisPlans(RedisBase, PlanStore):
    _claim_plan = lua("claim_plan.lua")
    _release_plan = lua("release_plan.lua")

    async def put_plan(self, plan: PlanRecord) -> None:
        open_index = f"{self.prefix}:idx:open-plans"
        with self._errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(self._sc(plan.scenario_id, f"plan:{plan.id}"), encode_record(plan))
                pipe.zadd(self._sc(plan.scenario_id, "plans"), {plan.id: plan.created})
                pipe.hset(f"{self.prefix}:idx:plans", plan.id, plan.scenario_id)
                if plan.done:
                    pipe.hdel(open_index, plan.id)
                else:
                    pipe.hset(open_index, plan.id, plan.scenario_id)
                await pipe.execute()

    async def _plan_in(self, scenario_id: str, plan_id: str) -> PlanRecord | None:
        packed = await self._redis.get(self._sc(scenario_id, f"plan:{plan_id}"))
        return None if packed is None else decode_record(PlanRecord, cast("bytes", packed))

    async def plan(self, plan_id: str) -> PlanRecord | None:
        with self._errors():
            scenario_id = await self._hget(f"{self.prefix}:idx:plans", plan_id)
            return None if scenario_id is None else await self._plan_in(_text(scenario_id), plan_id)

    async def plans(self, scenario_id: str) -> list[PlanRecord]:
        with self._errors():
            ids = await self._redis.zrange(self._sc(scenario_id, "plans"), 0, -1)
            found = [await self._plan_in(scenario_id, i.decode() if isinstance(i, bytes) else str(i)) for i in ids]
        return [p for p in found if p is not None]

    async def open_plans(self) -> list[PlanRecord]:
        with self._errors():
            index = await self._hgetall(f"{self.prefix}:idx:open-plans")
            found = [await self._plan_in(_text(sc), _text(pid)) for pid, sc in index.items()]
        return sorted((p for p in found if p is not None), key=lambda p: (p.created, p.id))

    def _plan_lease(self, plan_id: str) -> str:
        return f"{self.prefix}:planlease:{plan_id}"

    async def claim_plan(self, plan_id: str, owner: str, now: float, ttl: float) -> bool:
        with self._errors():
            claimed = await self._claim_plan(keys=[self._plan_lease(plan_id)], args=[owner, max(1, int(ttl * 1000))])
        return bool(claimed)

    async def release_plan(self, plan_id: str, owner: str) -> None:
        with self._errors():
            await self._release_plan(keys=[self._plan_lease(plan_id)], args=[owner])
