-- Create or replace one API-created budget of a tenant, keeping its place in creation order.
--
-- KEYS[1]  hash: the tenant's budgets (field = budget id, value = JSON of Budget.to_dict),
--          plus field "_v" = the tenant's version (raised by every change) and field "_n" =
--          the last creation sequence number handed out
-- KEYS[2]  sorted set: budget ids in creation order (member = id, score = sequence number)
-- ARGV: budget id, JSON
-- Reply: the tenant's version after the call; unchanged when the same JSON was already there.

local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == ARGV[2] then
  return tonumber(redis.call('HGET', KEYS[1], '_v') or '0')
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if not old then
  redis.call('ZADD', KEYS[2], redis.call('HINCRBY', KEYS[1], '_n', 1), ARGV[1])
end
return redis.call('HINCRBY', KEYS[1], '_v', 1)
