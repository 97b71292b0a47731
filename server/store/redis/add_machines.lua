-- KEYS: machine index, meta, machines, then one machine hash per machine.
-- ARGV: prefix, scenario id, then eight per machine (machine_specs.lua).
-- Returns {0} added, {1} no such scenario, {2, machine id} a key in use, {3, name} a name in use.
if redis.call('EXISTS', KEYS[2]) == 0 then return {1} end
local hashes = {}
for n = 4, #KEYS do hashes[#hashes + 1] = KEYS[n] end
return add_specs(KEYS[1], KEYS[3], ARGV[2], hashes, 3) or {0}
