-- KEYS: plan lease. ARGV: owner, ttl in ms. Returns 1 if the lease is now the owner's (taken or renewed), else 0.
local holder = redis.call('GET', KEYS[1])
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
