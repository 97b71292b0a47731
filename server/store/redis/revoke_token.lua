-- KEYS: token. ARGV: owner. Returns 0 if there is no such token of that owner.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'revoked', 1, 'sealed_key', '')
return 1
