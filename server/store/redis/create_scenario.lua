-- KEYS: owner index, machine index, meta, machines, then one machine hash per machine.
-- ARGV: prefix, scenario id, owner, name, created, then eight per machine (machine_specs.lua).
-- Returns {0} created, {1} the owner has a scenario of that name, {2, machine id} a machine key is in use.
if redis.call('HEXISTS', KEYS[1], ARGV[4]) == 1 then return {1} end
for i = 6, #ARGV, 8 do  -- checked before anything is written: a script that returns early keeps its writes
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return {2, ARGV[i]} end
end
redis.call('HSET', KEYS[1], ARGV[4], ARGV[2])
redis.call('HSET', KEYS[3], 'owner', ARGV[3], 'name', ARGV[4], 'created', ARGV[5], 'cursor', 0, 'orders', 0)
local hashes = {}
for n = 5, #KEYS do hashes[#hashes + 1] = KEYS[n] end
return add_specs(KEYS[2], KEYS[4], ARGV[2], hashes, 6) or {0}
