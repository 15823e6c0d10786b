-- Record one inbound event atomically (see `RedisStore::ingest`).
-- KEYS[1] contact hash  og:{ct}:c
-- KEYS[2] seen zset     og:{ct}:seen   member "<channel>\31<external id>", score = expiry (ms)
-- KEYS[3] conversations og:{ct}:cvs    list of conversation ids, oldest first
-- ARGV: 1 key prefix og:{ct}:  2 contact id  3 dedupe member  4 now (ms)  5 dedupe ttl (ms)
--       6 event time (µs)  7 channel  8 inactivity (µs)  9 history cap  10 history depth
--       11 name or ''  12 handles JSON array  13 proposed conversation id
--       14 history entry JSON or '' (not a message)  15 referral JSON or ''
--       16 reply window (µs) or ''  17 message retention (µs) or ''
-- Returns nil for a duplicate, else `describe(...)`.
local prefix = ARGV[1]
local now_ms = tonumber(ARGV[4])
local expires = redis.call('ZSCORE', KEYS[2], ARGV[3])
if expires and tonumber(expires) > now_ms then
  return false
end
redis.call('ZADD', KEYS[2], now_ms + tonumber(ARGV[5]), ARGV[3])
-- Expired dedupe entries go as new ones arrive: the set holds at most one TTL's worth.
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now_ms)

local at = tonumber(ARGV[6])
local channel = ARGV[7]

-- Contact: create on first sight, keep the latest name, merge handles (verified wins).
redis.call('HSETNX', KEYS[1], 'id', ARGV[2])
redis.call('HSETNX', KEYS[1], 'created_at', num(at))
if ARGV[11] ~= '' then
  redis.call('HSET', KEYS[1], 'name', ARGV[11])
end
update_handles(KEYS[1], ARGV[12], '')

-- Conversation: continue the latest one while open and active, else open a new one.
local conv_id = redis.call('HGET', KEYS[1], 'latest')
local started = '0'
local conv_key
if conv_id then
  conv_key = prefix .. 'cv:' .. conv_id
  local state = redis.call('HMGET', conv_key, 'status', 'last_at')
  local open = state[1] == 'open' and (at - tonumber(state[2] or '0')) < tonumber(ARGV[8])
  if not open then
    if state[1] == 'open' then
      redis.call('HSET', conv_key, 'status', 'closed', 'closed_at', num(at))
      timeline(prefix, conv_id, 'conversation.closed', at,
        redis.call('HGET', conv_key, 'current') or '', '')
    end
    conv_id = nil
  end
end
if not conv_id then
  conv_id = ARGV[13]
  conv_key = prefix .. 'cv:' .. conv_id
  redis.call('HSET', conv_key, 'contact', ARGV[2], 'status', 'open', 'started_at', num(at),
    'last_at', num(at), 'channels', cjson.encode({ channel }), 'current', channel,
    'messages', 0, 'touched_at', num(now_ms * 1000))
  redis.call('HSET', KEYS[1], 'latest', conv_id)
  redis.call('RPUSH', KEYS[3], conv_id)
  timeline(prefix, conv_id, 'conversation.started', at, channel, '')
  started = '1'
end
local history_key = prefix .. 'h:' .. conv_id

local switched = ''
if ARGV[14] ~= '' then
  local current = redis.call('HGET', conv_key, 'current')
  if current ~= channel then
    switched = current or ''
    redis.call('HSET', conv_key, 'current', channel, 'previous', switched)
    timeline(prefix, conv_id, 'conversation.channel_switched', at, channel,
      ',"previous_channel":' .. cjson.encode(switched))
  end
  local channels = cjson.decode(redis.call('HGET', conv_key, 'channels') or '[]')
  local used = false
  for _, name in ipairs(channels) do
    if name == channel then used = true end
  end
  if not used then
    channels[#channels + 1] = channel
    redis.call('HSET', conv_key, 'channels', cjson.encode(channels))
  end
  redis.call('HINCRBY', conv_key, 'messages', 1)
  -- Wall-clock time of the latest message: the sweeper closes a conversation after
  -- `inactivity` without messages received, whatever times providers report.
  redis.call('HSET', conv_key, 'touched_at', num(now_ms * 1000))
  local last = tonumber(redis.call('HGET', conv_key, 'last_at') or '0')
  if at > last then
    redis.call('HSET', conv_key, 'last_at', num(at))
  end
  -- Reply windows are per channel: `windows` maps channel → end (µs); `reply_until`
  -- is the current channel's, cleared when the current channel has none.
  local windows = cjson.decode(redis.call('HGET', conv_key, 'windows') or '{}')
  if ARGV[16] ~= '' then
    windows[channel] = num(at + tonumber(ARGV[16]))
    redis.call('HSET', conv_key, 'windows', cjson.encode(windows))
  end
  if windows[channel] then
    redis.call('HSET', conv_key, 'reply_until', windows[channel])
  else
    redis.call('HDEL', conv_key, 'reply_until')
  end
  redis.call('RPUSH', history_key, num(at) .. ' ' .. ARGV[14])
  timeline(prefix, conv_id, 'message', at, channel, ',"message":' .. ARGV[14])
  redis.call('LTRIM', history_key, -tonumber(ARGV[9]), -1)
end
if ARGV[15] ~= '' then
  redis.call('HSETNX', conv_key, 'first_touch', ARGV[15])
  redis.call('HSET', conv_key, 'last_touch', ARGV[15])
  timeline(prefix, conv_id, 'referral', at, channel, ',"referral":' .. ARGV[15])
end

if ARGV[17] ~= '' then
  retain(conv_key, history_key, prefix .. 'tl:' .. conv_id, now_ms * 1000 - tonumber(ARGV[17]),
    tonumber(ARGV[17]))
end

return describe(KEYS[1], conv_key, conv_id, history_key, tonumber(ARGV[10]), started, switched)
