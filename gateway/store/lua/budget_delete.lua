-- Delete one API-created budget of a tenant; the version rises only if there was one.
--
-- KEYS[1]  hash: the tenant's budgets, as in budget_put.lua
-- KEYS[2]  sorted set: budget ids in creation order, as in budget_put.lua
-- ARGV: budget id (never one of the hash's own "_" fields: the caller refuses those)
-- Reply: 1 if deleted, 0 if there was no such budget (nothing changed).

if redis.call('HDEL', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBY', KEYS[1], '_v', 1)
return 1
