-- Writes one batch of an agent's events and finished commands, in order, atomically.
-- ARGV: commands, group, results, events, deadletters, maxlen, dedup_ttl, reply_ttl, then ops:
--   E <n> <n fields...>                           an event
--   F <entry> <donekey> <replyto> <result> <k> <k events> <duplicate> <deadletter>
--     where each <...> group of fields is <n> followed by n values.
-- Returns one 1 (accepted) or 0 (duplicate) per F.
local commands, group, results, events, dlq = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local maxlen, dedup_ttl, reply_ttl = ARGV[6], ARGV[7], ARGV[8]
local i = 9
local accepted = {}

local function take()
  local v = ARGV[i]
  i = i + 1
  return v
end

local function fields()
  local n = tonumber(take())
  local out = {}
  for j = 1, n do
    out[j] = ARGV[i + j - 1]
  end
  i = i + n
  return out
end

local function xadd(stream, f, cap)
  if #f == 0 then
    return
  end
  redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', unpack(f))
end

while i <= #ARGV do
  local op = take()
  if op == 'E' then
    xadd(events, fields(), maxlen)
  else
    local entry, done, replyto = take(), take(), take()
    local result = fields()
    local k = tonumber(take())
    local evs = {}
    for j = 1, k do
      evs[j] = fields()
    end
    local duplicate, letter = fields(), fields()
    local ok = (done == '') or redis.call('SET', done, '1', 'NX', 'EX', dedup_ttl)
    if ok then
      xadd(results, result, maxlen)
      if replyto ~= '' and #result > 0 then
        -- A bad replyto (e.g. a key of another type) must not fail the whole batch.
        redis.pcall('XADD', replyto, 'MAXLEN', '~', 1000, '*', unpack(result))
        redis.pcall('EXPIRE', replyto, reply_ttl)
      end
      for j = 1, k do
        xadd(events, evs[j], maxlen)
      end
      xadd(dlq, letter, maxlen)
      accepted[#accepted + 1] = 1
    else
      xadd(events, duplicate, maxlen)
      accepted[#accepted + 1] = 0
    end
    if entry ~= '' then
      redis.call('XACK', commands, group, entry)
    end
  end
end
return accepted
