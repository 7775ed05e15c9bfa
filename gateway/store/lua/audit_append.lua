-- Add an audit entry as its tenant's newest, keeping the newest N; once per key if asked.
--
-- KEYS[1]  list: the tenant's audit entries, newest first (each the JSON of AuditEntry)
-- KEYS[2]  optional string: the "once" key of the change, holding the time (s since the
--          epoch) until which it stands; present only when the entry is to be kept once
-- ARGV: entry JSON, keep (N >= 1); with KEYS[2]: now (the entry's time), until, expiry (s:
--       Redis-side, only for cleaning up)
-- Reply: 1 if added, 0 if KEYS[2] held an unexpired mark (nothing changed).
-- "until" is compared with the caller's clock, not Redis's, so tests and backends agree.

if KEYS[2] then
  local held = redis.call('GET', KEYS[2])
  if held and tonumber(held) > tonumber(ARGV[3]) then
    return 0
  end
  redis.call('SET', KEYS[2], ARGV[4], 'EX', tonumber(ARGV[5]))
end
redis.call('LPUSH', KEYS[1], ARGV[1])
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
