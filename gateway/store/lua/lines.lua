-- Shared by reserve.lua, settle.lua and peek.lua (prepended to each when loaded): a line's
-- settled total, kept beside its buckets so a check reads one hash instead of every bucket.
--
-- The pending hash of a line holds "_settled" (the sum of its settled buckets still in the
-- window) and "_oldest" (the oldest bucket that sum counts from). When the window has moved on
-- (or the fields are missing, e.g. after an expiry), the buckets are summed again once.

local function settled_total(settled, pending, oldest, write)
  local state = redis.call('HMGET', pending, '_settled', '_oldest')
  if state[1] and tonumber(state[2]) == oldest then
    return tonumber(state[1])
  end
  local total = 0
  local flat = redis.call('ZRANGE', settled, 0, -1, 'WITHSCORES')
  for j = 1, #flat, 2 do
    if tonumber(flat[j]) < oldest then
      if write then redis.call('ZREM', settled, flat[j]) end
    else
      total = total + tonumber(flat[j + 1])
    end
  end
  if write then
    redis.call('HSET', pending, '_settled', string.format('%.0f', total), '_oldest', oldest)
  end
  return total
end

-- Raise a key's expiry to at least `seconds` (never shorten it: a hold may need it longer).
local function keep_at_least(key, seconds)
  if redis.call('TTL', key) < seconds then
    redis.call('EXPIRE', key, seconds)
  end
end

