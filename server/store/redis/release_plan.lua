-- KEYS: plan lease. ARGV: owner. Deletes the lease only if it is the owner's (it may have expired and been taken).
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
