-- KEYS: meta, the scenario's compositions (a hash: id -> record*). ARGV: id, record*. Returns 0 stored, 1 no scenario.
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 0
