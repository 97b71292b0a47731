-- KEYS: masters, master names. ARGV: name, id, packed record.
-- Returns {0} enrolled, {1, packed} already enrolled under that name, {2} the key is enrolled under another name.
local known = redis.call('HGET', KEYS[2], ARGV[1])
if known then return {1, redis.call('HGET', KEYS[1], known)} end
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return {2} end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return {0}
