-- Every API-created budget of a tenant in creation order, with the tenant's version: a
-- consistent view in one round trip. Read-only.
--
-- KEYS[1]  hash: the tenant's budgets, as in budget_put.lua
-- KEYS[2]  sorted set: budget ids in creation order, as in budget_put.lua
-- ARGV: none
-- Reply: {version, id_1, json_1, id_2, json_2, ...}

local reply = {tonumber(redis.call('HGET', KEYS[1], '_v') or '0')}
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  local json = redis.call('HGET', KEYS[1], id)
  if json then
    reply[#reply + 1] = id
    reply[#reply + 1] = json
  end
end
return reply
