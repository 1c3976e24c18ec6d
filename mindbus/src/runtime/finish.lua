#!lua
-- Writes a run of an agent's finished commands, in order, atomically.
-- KEYS: commands, results, events, deadletters, then every done key and reply stream the
-- batch names (all of them under the role's hash tag, so in one Redis Cluster slot).
-- ARGV: group, maxlen, dedup_ttl, reply_ttl, then per finished command:
-- <entry> <done> <replyto> <result> <event> <deadletter>, where <done> and <replyto> are
-- indexes into KEYS (0 for none) and each <...> group of fields is <n> followed by n values
-- (n may be 0).
-- A result is accepted when its entry is still pending (a command run twice after a
-- reclaim is finished twice; the second finish finds its entry acknowledged) and, when it
-- has a done key (a command with an idempotency key), the key is not taken yet. Either way
-- the entry ends acknowledged. An entry that is not pending may also be one Redis lost with
-- its data (a restart without persistence): if the stream has no record of reaching that
-- entry, nobody answered it, and its result is accepted.
-- The acknowledgement comes first and says whether the entry was pending (one command
-- where a pending check and an acknowledgement took two). Nothing after it can fail: the
-- script is declared (`#!lua`), so Redis refuses it whole when out of memory instead of
-- failing a write midway, and every stream it writes is checked to be a stream before
-- anything is written. A retried batch finds the entries it acknowledged not pending, so
-- a finish is never written twice. The senders bound
-- each group of fields (commands have at most 1,000 fields; a larger dead letter carries
-- its entry packed in one field), so no call passes Lua's limit on arguments.
-- Returns one 1 (accepted) or 0 (duplicate) per finished command; a duplicate's event is
-- written with type mindbus.command.duplicate instead.
-- Redis spends most of this script's time taking in ARGV, so the loop reads ARGV in place:
-- fields reach XADD as slices of it, and no table is built per command.
local commands, results, events, dlq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local group, maxlen, dedup_ttl, reply_ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local call, unpack = redis.call, unpack

-- Appends values[first..last] to stream; maxlen '0' means no cap (the monitor trims, never
-- past an unrecorded entry).
local function xadd(stream, values, first, last)
  if last < first then
    return
  end
  if maxlen == '0' then
    call('XADD', stream, '*', unpack(values, first, last))
  else
    call('XADD', stream, 'MAXLEN', '~', maxlen, '*', unpack(values, first, last))
  end
end

-- Whether stream id a <= b.
local function not_after(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  if not am or not bm then
    return true
  end
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as <= bs)
end

-- Whether the group exists and has read past `entry`.
local function delivered(entry)
  local groups = redis.pcall('XINFO', 'GROUPS', commands)
  if type(groups) ~= 'table' or groups.err then
    return false
  end
  for _, info in ipairs(groups) do
    local name, last
    for j = 1, #info, 2 do
      if info[j] == 'name' then
        name = info[j + 1]
      elseif info[j] == 'last-delivered-id' then
        last = info[j + 1]
      end
    end
    if name == group then
      return last ~= nil and not_after(entry, last)
    end
  end
  return false
end

-- Called only for an entry that is not pending: whether another finish acknowledged it
-- (this one is a duplicate), rather than this Redis losing it with its data.
local function acknowledged_before(entry)
  local range = redis.pcall('XRANGE', commands, entry, entry)
  if type(range) == 'table' and not range.err and #range > 0 then
    return delivered(entry)
  end
  -- Gone. A stream that has since added entries past it held it and trimmed it, as the
  -- monitor trims acknowledged entries: a duplicate. A stream that never got that far (or
  -- none at all) lost it with its data.
  local info = redis.pcall('XINFO', 'STREAM', commands)
  if type(info) ~= 'table' or info.err then
    return false
  end
  for j = 1, #info, 2 do
    if info[j] == 'last-generated-id' then
      return not_after(entry, info[j + 1])
    end
  end
  return false
end

-- The event at `start`, retyped as a duplicate (rare, so a copy is fine).
local function duplicate(start, n)
  local copy = {unpack(ARGV, start, start + n - 1)}
  for j = 1, n, 2 do
    if copy[j] == 'type' then
      copy[j + 1] = 'mindbus.command.duplicate'
    end
  end
  xadd(events, copy, 1, n)
end

-- Whether the reply stream may be capped and given a TTL: never one that has groups.
local function plain_reply(key)
  local groups = redis.pcall('XINFO', 'GROUPS', key)
  return type(groups) ~= 'table' or groups.err ~= nil or #groups == 0
end

-- The streams this script writes must be streams (or not exist yet): checked before any
-- write, so a key of another type fails the batch having written nothing.
for _, key in ipairs({results, events, dlq}) do
  local kind = call('TYPE', key)
  kind = kind.ok or kind
  if kind ~= 'stream' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. key .. ' is a ' .. kind .. ', not a stream')
  end
end

local accepted, done_count = {}, 0
local i, last = 5, #ARGV
while i <= last do
  local entry, done, replyto = ARGV[i], KEYS[tonumber(ARGV[i + 1])], KEYS[tonumber(ARGV[i + 2])]
  local rstart = i + 4
  local rn = tonumber(ARGV[i + 3])
  local estart = rstart + rn + 1
  local en = tonumber(ARGV[estart - 1])
  local lstart = estart + en + 1
  local ln = tonumber(ARGV[lstart - 1])
  i = lstart + ln
  done_count = done_count + 1
  local first = entry == '' or call('XACK', commands, group, entry) == 1
    or not acknowledged_before(entry)
  if first and done and call('EXISTS', done) == 1 then
    first = false
  end
  if first then
    xadd(dlq, ARGV, lstart, lstart + ln - 1)
    xadd(results, ARGV, rstart, rstart + rn - 1)
    xadd(events, ARGV, estart, estart + en - 1)
    if replyto and rn > 0 then
      -- A bad replyto (e.g. a key of another type) must not fail the whole batch.
      if plain_reply(replyto) then
        redis.pcall('XADD', replyto, 'MAXLEN', '~', 1000, '*', unpack(ARGV, rstart, rstart + rn - 1))
        redis.pcall('EXPIRE', replyto, reply_ttl)
      else
        redis.pcall('XADD', replyto, '*', unpack(ARGV, rstart, rstart + rn - 1))
      end
    end
    if done then
      call('SET', done, '1', 'EX', dedup_ttl)
    end
    accepted[done_count] = 1
  else
    if en > 0 then
      duplicate(estart, en)
    end
    accepted[done_count] = 0
  end
end
return accepted
