-- KEYS: the token. ARGV: owner, packed delegation. Only a live token of that owner gets its new delegation.
if redis.call('HGET', KEYS[1], 'owner') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'revoked') == '1' then return 0 end
redis.call('HSET', KEYS[1], 'delegation', ARGV[2])
return 1
