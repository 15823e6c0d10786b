-- Record a message the business sent (see `RedisStore::record_outbound`).
-- KEYS[1] contact hash og:{ct}:c
-- ARGV: 1 key prefix og:{ct}:  2 conversation id  3 time (µs)  4 history entry JSON
--       5 history cap  6 history depth  7 message retention (µs) or ''  8 now (µs)
--       9 owed key  10 owed record tail ('\31<payload>', see `owe`)  11 timeline cap
-- Returns false when the conversation does not exist, else `describe(...)`.
local conv_key = ARGV[1] .. 'cv:' .. ARGV[2]
local history_key = ARGV[1] .. 'h:' .. ARGV[2]
if redis.call('EXISTS', conv_key) == 0 then
  return false
end
local at = tonumber(ARGV[3])
redis.call('HINCRBY', conv_key, 'messages', 1)
-- The business wrote: the customer no longer waits (a fact the outcome rules read).
redis.call('HDEL', conv_key, 'awaiting')
redis.call('HSET', conv_key, 'touched_at', ARGV[8])
local last = tonumber(redis.call('HGET', conv_key, 'last_at') or '0')
if at > last then
  redis.call('HSET', conv_key, 'last_at', num(at))
end
redis.call('RPUSH', history_key, num(at) .. ' ' .. ARGV[4])
local timeline_key = ARGV[1] .. 'tl:' .. ARGV[2]
cap_timeline(conv_key, timeline_key, redis.call('RPUSH', timeline_key, timeline_entry('message',
  num(at), redis.call('HGET', conv_key, 'current') or '', ',"message":' .. ARGV[4])),
  tonumber(ARGV[11]))
redis.call('LTRIM', history_key, -tonumber(ARGV[5]), -1)
owe(ARGV[1], ARGV[9], ARGV[8], ARGV[2], '0', '', ARGV[10])
if ARGV[7] ~= '' then
  retain(conv_key, history_key, ARGV[1] .. 'tl:' .. ARGV[2], tonumber(ARGV[8]) - tonumber(ARGV[7]),
    tonumber(ARGV[7]))
end
return describe(KEYS[1], conv_key, ARGV[2], history_key, tonumber(ARGV[6]), '0', '')
