-- KEYS: meta, events. ARGV: max length, ts, kind, machine, data. Returns the new cursor, or nil (no scenario).
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local cursor = redis.call('HINCRBY', KEYS[1], 'cursor', 1)
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], cursor .. '-0',
           'ts', ARGV[2], 'kind', ARGV[3], 'machine', ARGV[4], 'data', ARGV[5])
return cursor
