-- Shared by reserve.lua, settle.lua and peek.lua (prepended to each when loaded).
--
-- A line keeps two keys: a sorted set of its settled usage per bucket, and a "pending" hash
-- holding its reservations (field = reservation id, value = "amount:bucket:expected_at|
-- expires_at": earlier versions, which wrote no expiry there, read such a value as one without
-- an expected end), "_sum" (their total), and "_settled" and "_oldest": the sum of its settled
-- buckets still in the window and the oldest bucket that sum counts from, so that a check
-- reads one hash instead of every bucket. When the window has moved on (or the fields are
-- missing, e.g. after an expiry) the buckets are summed again once.
--
-- A tenant's reservations expire from one sorted set (by expiry) for all its lines: a request
-- looks for expired ones once, not once per line. Each member names its reservation and the
-- pending hashes it holds (see hold_member).

-- A number as Redis writes an integer (Lua's own tostring may give "1e+15").
local function int(x)
  return string.format('%.0f', x)
end

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
    redis.call('HSET', pending, '_settled', int(total), '_oldest', oldest)
  end
  return total
end

-- Raise a key's expiry to at least `seconds` (never shorten it: a hold may need it longer).
local function keep_at_least(key, seconds)
  if redis.call('TTL', key) < seconds then
    redis.call('EXPIRE', key, seconds)
  end
end

-- The member of a reservation in its tenant's expiry set: its id, then the pending hash of
-- each line, each string after its length (any key name reads back whole). settle.lua builds
-- the same member from the same keys to remove it. `first`: the index in KEYS of the first
-- line's pending hash; a line's keys are 3 apart.
local function hold_member(rid, first, n)
  local parts = {#rid, ':', rid}
  for i = 1, n do
    local key = KEYS[first + 3 * (i - 1)]
    parts[#parts + 1] = #key .. ':' .. key
  end
  return table.concat(parts)
end

local function member_parts(member)
  local parts, at = {}, 1
  while at <= #member do
    local colon = string.find(member, ':', at, true)
    local size = tonumber(string.sub(member, at, colon - 1))
    parts[#parts + 1] = string.sub(member, colon + 1, colon + size)
    at = colon + size + 1
  end
  return parts
end

-- Ends a reservation in one pending hash (nothing when it had ended there before).
local function release(pending, rid)
  local held = redis.call('HGET', pending, rid)
  if held then
    redis.call('HINCRBY', pending, '_sum', -tonumber(string.match(held, '^(%-?%d+)')))
    redis.call('HDEL', pending, rid)
  end
end

-- Ends the tenant's reservations that expired by `now` (their instance never settled them),
-- in every line they held.
local function expire_holds(expiry, now)
  for _, member in ipairs(redis.call('ZRANGEBYSCORE', expiry, '-inf', now)) do
    local parts = member_parts(member)
    for j = 2, #parts do release(parts[j], parts[1]) end
    redis.call('ZREM', expiry, member)
  end
end

-- Before the tenant-wide set, each line kept its reservations' expiries in a sorted set of
-- its own (the line's third key). What one holds moves to the tenant's set; returns whether
-- anything moved. reserve.lua looks when it first meets a pending hash (then marked "_x") and
-- whenever the line's window moves on: what an instance of an earlier version reserves during
-- a rolling upgrade and never settles (it crashed) expires within a bucket of its expiry.
local function adopt_line_expiries(line_expiry, pending, expiry)
  local flat = redis.call('ZRANGE', line_expiry, 0, -1, 'WITHSCORES')
  for j = 1, #flat, 2 do
    local rid = flat[j]
    redis.call('ZADD', expiry, flat[j + 1], #rid .. ':' .. rid .. #pending .. ':' .. pending)
  end
  if #flat > 0 then redis.call('DEL', line_expiry) end
  return #flat > 0
end
