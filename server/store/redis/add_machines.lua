-- KEYS: machine index, meta, machines, then one machine hash per machine.
-- ARGV: prefix, scenario id, then (machine id, name, os, role, public key, report key, labels*, certificate* or '')
-- per machine. Returns {0} added, {1} no such scenario, {2, machine id} a key in use, {3, name} a name in use.
if redis.call('EXISTS', KEYS[2]) == 0 then return {1} end
for i = 3, #ARGV, 8 do
  if redis.call('HEXISTS', KEYS[1], ARGV[i]) == 1 then return {2, ARGV[i]} end
end
-- Names are unique within a scenario: a scan of its machines, as adding is rare next to everything else.
local taken = {}
for _, id in ipairs(redis.call('SMEMBERS', KEYS[3])) do
  local name = redis.call('HGET', sc_key(ARGV[2], 'machine:' .. id), 'name')
  if name then taken[name] = true end
end
for i = 3, #ARGV, 8 do
  if taken[ARGV[i + 1]] then return {3, ARGV[i + 1]} end
end
local n = 4
for i = 3, #ARGV, 8 do
  redis.call('HSET', KEYS[1], ARGV[i], ARGV[2])
  redis.call('SADD', KEYS[3], ARGV[i])
  redis.call('HSET', KEYS[n], 'name', ARGV[i + 1], 'os', ARGV[i + 2], 'role', ARGV[i + 3],
             'public_key', ARGV[i + 4], 'report_key', ARGV[i + 5], 'labels', ARGV[i + 6], 'status', 'offline')
  if ARGV[i + 7] ~= '' then redis.call('HSET', KEYS[n], 'certificate', ARGV[i + 7]) end
  n = n + 1
end
return {0}
