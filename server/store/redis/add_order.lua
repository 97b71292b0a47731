-- KEYS: orders index, meta, orders, order, chunks, inbox, inboxes.
-- ARGV: order id, scenario id, machine id, kind, body, state, created, updated, inbox max, chunk count, chunks...
-- Returns {0} queued, {1} the id was used before, {2} no such scenario, {3} the inbox is full.
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return {1} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {2} end
local queued = ARGV[6] == 'queued'
if queued and redis.call('XLEN', KEYS[6]) >= tonumber(ARGV[9]) then return {3} end
local seq = redis.call('HINCRBY', KEYS[2], 'orders', 1)
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], seq, ARGV[1])
redis.call('HSET', KEYS[4], 'machine', ARGV[3], 'kind', ARGV[4], 'body', ARGV[5], 'state', ARGV[6],
           'created', ARGV[7], 'updated', ARGV[8], 'seq', seq)
for i = 11, 10 + tonumber(ARGV[10]) do redis.call('RPUSH', KEYS[5], ARGV[i]) end
if queued then
  redis.call('HSET', KEYS[4], 'inbox', redis.call('XADD', KEYS[6], '*', 'order', ARGV[1]))
  redis.call('SADD', KEYS[7], ARGV[3])
end
return {0}
