-- Reserves a call's estimated cost against every budget it counts toward, atomically: the
-- call may start only if none of its budgets is spent yet, and then its estimate counts as
-- spent at once, so calls allowed at the same moment see each other.
-- KEYS: the usage hashes (run, tenant-day, day; any may be absent).
-- ARGV[1]: the estimate in micro-USD; ARGV[2 * i]: the limit of KEYS[i] in micro-USD, or
-- -1 for none; ARGV[2 * i + 1]: its TTL in seconds.
-- Returns 0 when reserved, else the 1-based index of the first spent budget.
local estimate = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  local limit = tonumber(ARGV[2 * i])
  if limit >= 0 then
    local spent = tonumber(redis.call('HGET', key, 'cost_micros') or '0')
    if spent >= limit then
      return i
    end
  end
end
for i, key in ipairs(KEYS) do
  redis.call('HINCRBY', key, 'cost_micros', estimate)
  redis.call('HINCRBY', key, 'reserved_micros', estimate)
  redis.call('EXPIRE', key, tonumber(ARGV[2 * i + 1]))
end
return 0
