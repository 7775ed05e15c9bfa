-- Check and reserve one request's amount in every line, all or none.
--
-- KEYS, per line i (1-based), three keys sharing the tenant's hash tag (lines.lua):
--   KEYS[3i-2]  sorted set: settled usage per time bucket (member = bucket index, score = amount)
--   KEYS[3i-1]  hash: pending reservations and the line's running sums
--   KEYS[3i]    sorted set: the line's own reservation expiries, as earlier versions kept them
--               (read only to adopt what they hold: lines.lua)
-- KEYS[#KEYS-1]  sorted set: the tenant's reservations by expiry (score = expires_at)
-- KEYS[#KEYS]  hash: the tenant's API budgets (only its field "_v", their version, is read)
-- ARGV: now, expires_at, reservation id, the caller's version of the API budgets ("" to skip
--   the check), expected_at (when the reservation is expected to settle); the number of
--   windows the lines meet, then per window 4 values: current bucket, oldest bucket in the
--   window, width (s per bucket; 0 = calendar month), leaves_now (when the current bucket
--   leaves the window, by Window.leaves_at: an older bucket leaves as many widths earlier, so
--   the rule lives in Python alone); then per line 3 values: limit ("" for an alert-only line:
--   counted, never refused), amount, its window (1-based).
-- Reply: {ok (1|0), fits_at (-1: never, 0: n/a), earliest (fits_at were every reservation in
--   flight to end now), used_1 .. used_n, failed indexes (0-based)},
--   or {0, 'stale'} when the API budgets' version differs: nothing reserved
-- Time comes from the caller's clock, never from Redis: the embedded store agrees to the unit.

local now = tonumber(ARGV[1])
local expires_at = ARGV[2]
local rid = ARGV[3]
local expected_at = ARGV[5]
local n = (#KEYS - 2) / 3
local expiry = KEYS[#KEYS - 1]
if ARGV[4] ~= '' then
  local version = tonumber(redis.call('HGET', KEYS[#KEYS], '_v') or '0')
  if version ~= tonumber(ARGV[4]) then
    return {0, 'stale'}
  end
end

expire_holds(expiry, now)
local used, lines, sums = {}, {}, {}
local windows = {}
for k = 1, tonumber(ARGV[6]) do
  local at = 6 + (k - 1) * 4
  windows[k] = {
    bucket = tonumber(ARGV[at + 1]), oldest = tonumber(ARGV[at + 2]),
    width = tonumber(ARGV[at + 3]), leaves_now = tonumber(ARGV[at + 4]),
  }
end
local first_line = 6 + #windows * 4
for i = 1, n do
  local settled, pending = KEYS[3 * i - 2], KEYS[3 * i - 1]
  local base = first_line + (i - 1) * 3
  local window = windows[tonumber(ARGV[base + 3])]
  local line = {
    limit = tonumber(ARGV[base + 1]), enforce = ARGV[base + 1] ~= '',
    amount = tonumber(ARGV[base + 2]), bucket = window.bucket, oldest = window.oldest,
    width = window.width, leaves_now = window.leaves_now,
  }
  lines[i] = line
  local state = redis.call('HMGET', pending, '_sum', '_settled', '_oldest', '_x')
  local current = state[2] and tonumber(state[3]) == line.oldest
  -- the line's own expiry set, which earlier versions wrote: read once, then as the window
  -- moves on (an instance of such a version may still share this Redis)
  if not (state[4] and current) and adopt_line_expiries(KEYS[3 * i], pending, expiry) then
    expire_holds(expiry, now)
    state = redis.call('HMGET', pending, '_sum', '_settled', '_oldest', '_x')
  end
  sums[i] = tonumber(state[1] or '0')
  if current then
    used[i] = sums[i] + tonumber(state[2])
  else
    used[i] = sums[i] + settled_total(settled, pending, line.oldest, true)
  end
end

local failed = {}
for i = 1, n do
  local line = lines[i]
  if line.enforce and used[i] + line.amount > line.limit then
    failed[#failed + 1] = i
  end
end

-- the first time the sorted frees add up to excess (default: when the current bucket leaves)
local function first_fit(frees, excess, default)
  table.sort(frees, function(x, y) return x[1] < y[1] end)
  local freed = 0
  for _, entry in ipairs(frees) do
    freed = freed + entry[2]
    if freed >= excess then return entry[1] end
  end
  return default
end

local reply = {}
if #failed > 0 then
  local latest, earliest = now, now
  for _, i in ipairs(failed) do
    local line = lines[i]
    if line.amount > line.limit then
      latest, earliest = -1, -1
      break
    end
    -- room frees as settled buckets leave the window and as reservations in flight reach
    -- their expected end (Python's store.base.fits_at, to the unit); earliest: were every
    -- reservation in flight to end now
    local excess = used[i] + line.amount - line.limit
    local frees, frees_now = {}, {}
    local flat = redis.call('ZRANGE', KEYS[3 * i - 2], 0, -1, 'WITHSCORES')
    for j = 1, #flat, 2 do
      local leaves = line.leaves_now - (line.bucket - tonumber(flat[j])) * line.width
      frees[#frees + 1] = {leaves, tonumber(flat[j + 1])}  -- month: width 0
      frees_now[#frees_now + 1] = frees[#frees]
    end
    local held = redis.call('HGETALL', KEYS[3 * i - 1])
    for j = 1, #held, 2 do
      if string.sub(held[j], 1, 1) ~= '_' then
        local amount, at = string.match(held[j + 1], '^(%-?%d+):%-?%d+:?([^:|]*)')
        local ends = tonumber(at)  -- never past its expiry (the caller caps it)
        if not ends then  -- held before expected ends were kept: its expiry
          ends = tonumber(redis.call('ZSCORE', KEYS[3 * i], held[j]) or line.leaves_now)
        end
        if ends < now then ends = now end
        frees[#frees + 1] = {ends, tonumber(amount)}
        frees_now[#frees_now + 1] = {now, tonumber(amount)}
      end
    end
    local when = first_fit(frees, excess, line.leaves_now)
    if when > latest then latest = when end
    when = first_fit(frees_now, excess, line.leaves_now)
    if when > earliest then earliest = when end
  end
  reply = {0, tostring(latest), tostring(earliest)}
else
  local keep = math.ceil(tonumber(expires_at) - now) + 60
  local held = ':' .. expected_at .. '|' .. expires_at
  for i = 1, n do
    local line = lines[i]
    local pending = KEYS[3 * i - 1]
    redis.call('HSET', pending, rid, line.amount .. ':' .. line.bucket .. held,
               '_sum', int(sums[i] + line.amount), '_x', '1')
    keep_at_least(pending, keep)
  end
  redis.call('ZADD', expiry, expires_at, hold_member(rid, 2, n))
  keep_at_least(expiry, keep)
  reply = {1, '0', '0'}
end
for i = 1, n do reply[#reply + 1] = used[i] end
for _, i in ipairs(failed) do reply[#reply + 1] = i - 1 end
return reply
