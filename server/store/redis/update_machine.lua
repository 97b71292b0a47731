-- KEYS: machine index, present. ARGV: prefix, machine id, status, last seen, facts or '', ips or ''.
local sc = redis.call('HGET', KEYS[1], ARGV[2])
if not sc then return 0 end
local key = sc_key(sc, 'machine:' .. ARGV[2])
redis.call('HSET', key, 'status', ARGV[3], 'last_seen', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', key, 'facts', ARGV[5]) end
if ARGV[6] ~= '' then redis.call('HSET', key, 'ips', ARGV[6]) end
if ARGV[7] ~= '' then redis.call('HSET', key, 'ready_proof', ARGV[7]) end
if ARGV[3] == 'offline' then redis.call('SREM', KEYS[2], ARGV[2]) else redis.call('SADD', KEYS[2], ARGV[2]) end
return 1
