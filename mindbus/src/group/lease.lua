-- Renews, re-counts or hands back pending entries, but only those still owned by ARGV[2].
-- KEYS[1] stream; ARGV: group, consumer, mode ('renew' | 'handback'), idle ms, then pairs
-- of <entry id> <retry count or ''>. Returns the ids no longer owned by the consumer.
local stream, group, consumer, mode, idle = KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local lost = {}
for j = 5, #ARGV, 2 do
  local id, retry = ARGV[j], ARGV[j + 1]
  local row = redis.call('XPENDING', stream, group, id, id, 1)[1]
  if row and row[2] == consumer then
    local args = {stream, group, consumer, 0, id}
    if mode == 'handback' then
      args[#args + 1] = 'IDLE'
      args[#args + 1] = idle
    end
    if retry ~= '' then
      args[#args + 1] = 'RETRYCOUNT'
      args[#args + 1] = retry
    end
    args[#args + 1] = 'JUSTID'
    redis.call('XCLAIM', unpack(args))
  else
    lost[#lost + 1] = id
  end
end
return lost
