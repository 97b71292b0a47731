-- KEYS: present, machine index. ARGV: prefix. Returns how many machines were not offline.
local n = 0
for _, m in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local sc = redis.call('HGET', KEYS[2], m)
  if sc then
    local key = sc_key(sc, 'machine:' .. m)
    local status = redis.call('HGET', key, 'status')
    if status and status ~= 'offline' then
      redis.call('HSET', key, 'status', 'offline')
      n = n + 1
    end
  end
end
redis.call('DEL', KEYS[1])
return n
