-- KEYS: the machine hash. ARGV: the packed certificate. Returns 1 if the machine exists (and was certified).
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'certificate', ARGV[1])
return 1
