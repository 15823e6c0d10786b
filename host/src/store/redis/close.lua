-- Close the contact's latest conversation if it is open and idle (see
-- `RedisStore::close_idle`). Atomic, so instances sweeping together close it once.
-- KEYS[1] contact hash og:{ct}:c
-- ARGV: 1 key prefix og:{ct}:  2 now (µs)  3 inactivity (µs)  4 owed record tail
--       ('\31<payload>': the conversation.closed it owes, kept under 'closed\31<cv>')
--       5 commit time (µs, wall clock)
-- Returns {'gone'} (nothing open), {'active', last activity (µs)} or
-- {'closed', describe(...)...}.
local conv_id = redis.call('HGET', KEYS[1], 'latest')
if not conv_id then
  return { 'gone' }
end
local conv_key = ARGV[1] .. 'cv:' .. conv_id
local state = redis.call('HMGET', conv_key, 'status', 'last_at', 'touched_at')
if state[1] ~= 'open' then
  return { 'gone' }
end
-- Idle means: no message for `inactivity`, by the latest event time and by the time it
-- was received (providers may report old times, e.g. on retries).
local last = math.max(tonumber(state[2] or '0'), tonumber(state[3] or '0'))
local now = tonumber(ARGV[2])
if now - last < tonumber(ARGV[3]) then
  return { 'active', num(last) }
end
redis.call('HSET', conv_key, 'status', 'closed', 'closed_at', num(now))
-- Instances' copies of the conversation are out of date (see plan.rs).
redis.call('HINCRBY', conv_key, 'sv', 1)
owe(ARGV[1], 'closed\31' .. conv_id, ARGV[5], conv_id, '0', '', ARGV[4])
timeline(ARGV[1], conv_id, 'conversation.closed', now,
  redis.call('HGET', conv_key, 'current') or '', '')
local out = describe(KEYS[1], conv_key, conv_id, ARGV[1] .. 'h:' .. conv_id, 0, '0', '')
table.insert(out, 1, 'closed')
return out
