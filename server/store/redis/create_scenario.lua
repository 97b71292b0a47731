-- KEYS: owner index, machine index, meta, machines, then one machine hash per machine.
-- ARGV: scenario id, owner, name, created, then (machine id, name, os, role, public key, report key, labels*,
-- certificate* or '') per machine.
-- Returns {0} created, {1} the owner has a scenario of that name, {2, machine id} a machine key is in use.
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return {1} end
for i = 5, #ARGV, 8 do
  if redis.call('HEXISTS', KEYS[2], ARGV[i]) == 1 then return {2, ARGV[i]} end
end
redis.call('HSET', KEYS[1], ARGV[3], ARGV[1])
redis.call('HSET', KEYS[3], 'owner', ARGV[2], 'name', ARGV[3], 'created', ARGV[4], 'cursor', 0, 'orders', 0)
local n = 5
for i = 5, #ARGV, 8 do
  redis.call('HSET', KEYS[2], ARGV[i], ARGV[1])
  redis.call('SADD', KEYS[4], ARGV[i])
  redis.call('HSET', KEYS[n], 'name', ARGV[i + 1], 'os', ARGV[i + 2], 'role', ARGV[i + 3],
             'public_key', ARGV[i + 4], 'report_key', ARGV[i + 5], 'labels', ARGV[i + 6], 'status', 'offline')
  if ARGV[i + 7] ~= '' then redis.call('HSET', KEYS[n], 'certificate', ARGV[i + 7]) end
  n = n + 1
end
return {0}
