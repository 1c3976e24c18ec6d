-- Writes a run of an agent's finished commands, in order, atomically.
-- ARGV: commands, group, results, events, deadletters, maxlen, dedup_ttl, reply_ttl, then per
-- finished command: <entry> <donekey> <replyto> <result> <k> <k events> <deadletter>,
-- where each <...> group of fields is <n> followed by n values.
-- Returns one 1 (accepted) or 0 (duplicate) per F; a duplicate's first event is written
-- with type mindbus.command.duplicate instead.
-- Fields are passed to XADD as slices of ARGV (no tables are built on the hot path).
local commands, group, results, events, dlq = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen, dedup_ttl, reply_ttl = ARGV[6], ARGV[7], ARGV[8]
local i = 9
local accepted = {}
local acks = {}

local function take()
  local v = ARGV[i]
  i = i + 1
  return v
end

-- A group of fields: returns where it starts and how many values it has.
local function fields()
  local n = tonumber(take())
  local start = i
  i = i + n
  return start, n
end

-- cap '0' means no cap (the monitor trims, never past an unrecorded entry).
local function xadd(stream, start, n, cap)
  if n == 0 then
    return
  end
  if cap == '0' then
    redis.call('XADD', stream, '*', unpack(ARGV, start, start + n - 1))
  else
    redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', unpack(ARGV, start, start + n - 1))
  end
end

-- The event at `start`, retyped as a duplicate (rare, so a copy is fine).
local function duplicate(start, n)
  local copy = {}
  for j = 0, n - 1 do
    copy[j + 1] = ARGV[start + j]
  end
  for j = 1, n, 2 do
    if copy[j] == 'type' then
      copy[j + 1] = 'mindbus.command.duplicate'
    end
  end
  local start = #ARGV + 1
  for j = 1, #copy do
    ARGV[start + j - 1] = copy[j]
  end
  xadd(events, start, #copy, maxlen)
end

local last = #ARGV
while i <= last do
  do
    local entry, done, replyto = take(), take(), take()
    local rstart, rn = fields()
    local k = tonumber(take())
    local evs = {}
    for j = 1, k do
      local start, n = fields()
      evs[j] = {start, n}
    end
    local lstart, ln = fields()
    local ok = (done == '') or redis.call('SET', done, '1', 'NX', 'EX', dedup_ttl)
    if ok then
      xadd(results, rstart, rn, maxlen)
      if replyto ~= '' and rn > 0 then
        -- A bad replyto (e.g. a key of another type) must not fail the whole batch.
        redis.pcall('XADD', replyto, 'MAXLEN', '~', 1000, '*', unpack(ARGV, rstart, rstart + rn - 1))
        redis.pcall('EXPIRE', replyto, reply_ttl)
      end
      for j = 1, k do
        xadd(events, evs[j][1], evs[j][2], maxlen)
      end
      xadd(dlq, lstart, ln, maxlen)
      accepted[#accepted + 1] = 1
    else
      if k > 0 then
        duplicate(evs[1][1], evs[1][2])
      end
      accepted[#accepted + 1] = 0
    end
    if entry ~= '' then
      acks[#acks + 1] = entry
    end
  end
end
-- One XACK for the whole run, still inside this atomic script.
for j = 1, #acks, 1000 do
  redis.call('XACK', commands, group, unpack(acks, j, math.min(j + 999, #acks)))
end
return accepted
