-- A prelude (after keys.lua) for the two scripts that move an order: finds it and takes it out of its inbox.
local function order_key(index, id)
  local sc = redis.call('HGET', index, id)
  if not sc then return nil, nil end
  return sc, sc_key(sc, 'order:' .. id)
end
local function leave_inbox(sc, key)
  local entry = redis.call('HGET', key, 'inbox')
  if entry then
    redis.call('XDEL', sc_key(sc, 'inbox:' .. redis.call('HGET', key, 'machine')), entry)
    redis.call('HDEL', key, 'inbox')
  end
end
