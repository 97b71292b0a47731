-- KEYS: the hash. ARGV: field, the positional blob read, the same record by name. Returns 1 if rewritten.
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
