-- KEYS: meta, the scenario's enrollments (sorted by creation), the token's hash.
-- ARGV: token id, claims*, signature, uses, expires, created. Returns 0 stored, 1 no such scenario, 2 id taken.
if redis.call('EXISTS', KEYS[1]) == 0 then return 1 end
if redis.call('EXISTS', KEYS[3]) == 1 then return 2 end
redis.call('HSET', KEYS[3], 'claims', ARGV[2], 'signature', ARGV[3], 'uses', ARGV[4], 'expires', ARGV[5],
           'created', ARGV[6], 'revoked', '0')
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
return 0
