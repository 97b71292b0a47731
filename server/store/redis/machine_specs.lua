-- A prelude for the scripts that add machines to a scenario. Machine specs are eight ARGV entries each, from
-- ARGV[first]: (machine id, name, os, role, public key, report key, labels*, certificate* or ''); hashes holds
-- their machine hash keys in the same order. Adds them all, or none and returns {2, machine id} for a key in use
-- anywhere or {3, name} for a name the scenario has; nil once added.
local function add_specs(index, machines, sc, hashes, first)
  for i = first, #ARGV, 8 do
    if redis.call('HEXISTS', index, ARGV[i]) == 1 then return {2, ARGV[i]} end
  end
  -- Names are unique within a scenario: a scan of its machines, as adding is rare next to everything else.
  local taken = {}
  for _, id in ipairs(redis.call('SMEMBERS', machines)) do
    local name = redis.call('HGET', sc_key(sc, 'machine:' .. id), 'name')
    if name then taken[name] = true end
  end
  for i = first, #ARGV, 8 do
    if taken[ARGV[i + 1]] then return {3, ARGV[i + 1]} end
  end
  local n = 1
  for i = first, #ARGV, 8 do
    redis.call('HSET', index, ARGV[i], sc)
    redis.call('SADD', machines, ARGV[i])
    redis.call('HSET', hashes[n], 'name', ARGV[i + 1], 'os', ARGV[i + 2], 'role', ARGV[i + 3],
               'public_key', ARGV[i + 4], 'report_key', ARGV[i + 5], 'labels', ARGV[i + 6], 'status', 'offline')
    if ARGV[i + 7] ~= '' then redis.call('HSET', hashes[n], 'certificate', ARGV[i + 7]) end
    n = n + 1
  end
  return nil
end
