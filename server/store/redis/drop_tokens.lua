-- KEYS: owner's token index. ARGV: prefix. Deletes the owner's tokens (with a removed master).
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do redis.call('DEL', ARGV[1] .. ':token:' .. id) end
redis.call('DEL', KEYS[1])
return 1
