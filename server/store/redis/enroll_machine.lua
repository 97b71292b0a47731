-- KEYS: machine index, meta, machines, the token's hash, its registrations list, the new machine's hash.
-- ARGV: prefix, scenario id, now, the packed registration, then the machine's eight (machine_specs.lua).
-- Returns {0} enrolled, {10} no such token (or scenario), {11} revoked, {12} expired, {13} used up, or
-- add_specs's {2, machine id} / {3, name}. The check and the use are one script: replicas cannot both take the
-- last use.
if redis.call('EXISTS', KEYS[2]) == 0 or redis.call('EXISTS', KEYS[4]) == 0 then return {10} end
if redis.call('HGET', KEYS[4], 'revoked') == '1' then return {11} end
if tonumber(ARGV[3]) >= tonumber(redis.call('HGET', KEYS[4], 'expires')) then return {12} end
if redis.call('LLEN', KEYS[5]) >= tonumber(redis.call('HGET', KEYS[4], 'uses')) then return {13} end
local clash = add_specs(KEYS[1], KEYS[3], ARGV[2], {KEYS[6]}, 5)
if clash then return clash end
redis.call('RPUSH', KEYS[5], ARGV[4])
return {0}
