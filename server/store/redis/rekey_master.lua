-- KEYS: masters, master names. ARGV: prefix, old id, new id, packed new record, name.
-- Returns 0 unknown master, 2 the new key is enrolled already, 1 moved (record, name, scenarios' and tokens' owner).
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], ARGV[3]) == 1 then return 2 end
redis.call('HDEL', KEYS[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[2], ARGV[5], ARGV[3])
local old_index = ARGV[1] .. ':idx:owner:' .. ARGV[2]
local owned = redis.call('HGETALL', old_index)
for i = 2, #owned, 2 do
  redis.call('HSET', ARGV[1] .. ':{sc:' .. owned[i] .. '}:meta', 'owner', ARGV[3])
end
if #owned > 0 then redis.call('RENAME', old_index, ARGV[1] .. ':idx:owner:' .. ARGV[3]) end
local old_tokens = ARGV[1] .. ':idx:tokens:' .. ARGV[2]
local tokens = redis.call('SMEMBERS', old_tokens)
for _, id in ipairs(tokens) do
  redis.call('HSET', ARGV[1] .. ':token:' .. id, 'owner', ARGV[3])
end
if #tokens > 0 then
  local new_tokens = ARGV[1] .. ':idx:tokens:' .. ARGV[3]
  redis.call('SUNIONSTORE', new_tokens, new_tokens, old_tokens)
  redis.call('DEL', old_tokens)
end
return 1
