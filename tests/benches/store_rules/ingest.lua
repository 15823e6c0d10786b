-- The ingest script before the context rules moved to Rust, deciding in Lua (kept as
-- the baseline of tests/benches/store_rules.rs).
-- Record one inbound event atomically (see `RedisStore::ingest`).
-- KEYS[1] contact hash  og:{ct}:c
-- KEYS[2] seen zset     og:{ct}:seen   member "<channel>\31<external id>", score = expiry (ms)
-- KEYS[3] conversations og:{ct}:cvs    list of conversation ids, oldest first
-- ARGV: 1 key prefix og:{ct}:  2 contact id  3 dedupe member  4 now (ms)  5 dedupe ttl (ms)
--       6 event time (µs)  7 channel  8 inactivity (µs)  9 history cap  10 history depth
--       11 name or ''  12 handles JSON array  13 proposed conversation id
--       14 history entry JSON or '' (not a message)  15 referral JSON or ''
--       16 reply window (µs) or ''  17 message retention (µs) or ''
--       18 owed record tail: '<merge JSON or empty>\31<payload>', or '' (owes nothing)
--       19 timeline cap
--       20 message direction: 'inbound', 'outbound' or '' (not a message)
--       21 contact hash fields ('v:<kind>:<value>', \31-joined) of verified handles the
--          client found pointing at this contact: later events carrying them can take
--          the one-request path (arrive.lua)
-- Returns nil for a duplicate, else the reply `describe` (common.lua) would give.
-- The owed record (what this event owes its subscribers) is written here, with the rest:
-- a crash before the events reach the outbox leaves it for the retry or the relay.
--
-- Each hash is read once and written once, each list pushed once, and the reply is built
-- from what the script holds: every redis.call costs the server about a microsecond
-- beyond its command (reading and writing field by field, 25 commands, cost 43 µs per
-- call alone; this, about 7, costs 36 µs: docs/benchmarks.md). Times stay decimal
-- strings where they are only stored.
local prefix = ARGV[1]
local now_ms = tonumber(ARGV[4])

-- Dedupe: a member present and not yet expired is a duplicate; an expired one is renewed.
-- Other expired members are swept on about one call in 16 (by the clock's millisecond), so
-- the set holds one TTL's worth of events plus a few.
local expires = now_ms + tonumber(ARGV[5])
if redis.call('ZADD', KEYS[2], 'NX', expires, ARGV[3]) == 0 then
  if tonumber(redis.call('ZSCORE', KEYS[2], ARGV[3])) > now_ms then
    return false
  end
  redis.call('ZADD', KEYS[2], expires, ARGV[3])
end
if now_ms % 16 == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[4])
end

local at_text = ARGV[6]
local at = tonumber(at_text)
local now_us = ARGV[4] .. '000'
local channel = ARGV[7]

-- Pending field writes of a hash: state[field] is the value after this event.
local function set(state, changes, field, value)
  state[field] = value
  changes[#changes + 1] = field
  changes[#changes + 1] = value
end

-- Contact: create on first sight, keep the latest name, merge handles (verified wins).
local c = redis.call('HMGET', KEYS[1], 'id', 'name', 'created_at', 'handles', 'latest', 'hs')
local contact = { name = c[2], created_at = c[3], handles = c[4] or '[]' }
local contact_changes = {}
if not c[1] then set(contact, contact_changes, 'id', ARGV[2]) end
if not c[3] then set(contact, contact_changes, 'created_at', at_text) end
if ARGV[11] ~= '' and ARGV[11] ~= c[2] then set(contact, contact_changes, 'name', ARGV[11]) end
-- `hs` keeps the sender's handles as last merged: a sender reporting the same ones again
-- (nearly every message) costs a string comparison, not two JSON decodes. Merges and
-- unmerges, which change `handles` otherwise, delete it.
if ARGV[12] ~= c[6] then
  local handles = merged_handles(c[4], ARGV[12], '')
  if handles then set(contact, contact_changes, 'handles', handles) end
  set(contact, contact_changes, 'hs', ARGV[12])
end
for _, field in ipairs(split(ARGV[21])) do set(contact, contact_changes, field, '1') end

-- Conversation: continue the latest one while open and active, else open a new one.
local conv_id = c[5]
local conv, conv_key
if conv_id then
  conv_key = prefix .. 'cv:' .. conv_id
  local values = redis.call('HMGET', conv_key, 'windows', unpack(CONVERSATION_FIELDS))
  conv = { windows = values[1] }
  for i, field in ipairs(CONVERSATION_FIELDS) do conv[field] = values[i + 1] end
  local open = conv.status == 'open' and (at - tonumber(conv.last_at or '0')) < tonumber(ARGV[8])
  if not open then
    if conv.status == 'open' then
      redis.call('HSET', conv_key, 'status', 'closed', 'closed_at', at_text)
      redis.call('RPUSH', prefix .. 'tl:' .. conv_id,
        timeline_entry('conversation.closed', at_text, conv.current or '', ''))
    end
    conv_id = nil
  end
end
local conv_changes = {}
local entries = {}
local started = '0'
if not conv_id then
  conv_id = ARGV[13]
  conv_key = prefix .. 'cv:' .. conv_id
  conv = {}
  set(conv, conv_changes, 'contact', ARGV[2])
  set(conv, conv_changes, 'status', 'open')
  set(conv, conv_changes, 'started_at', at_text)
  set(conv, conv_changes, 'last_at', at_text)
  set(conv, conv_changes, 'channels', cjson.encode({ channel }))
  set(conv, conv_changes, 'current', channel)
  set(conv, conv_changes, 'messages', '0')
  set(conv, conv_changes, 'touched_at', now_us)
  set(contact, contact_changes, 'latest', conv_id)
  redis.call('RPUSH', KEYS[3], conv_id)
  entries[#entries + 1] = timeline_entry('conversation.started', at_text, channel, '')
  started = '1'
end
local history_key = prefix .. 'h:' .. conv_id
local timeline_key = prefix .. 'tl:' .. conv_id

local switched = ''
local first_in = ''
if ARGV[14] ~= '' then
  local moved = conv.current ~= channel
  if moved then
    switched = conv.current or ''
    set(conv, conv_changes, 'current', channel)
    set(conv, conv_changes, 'previous', switched)
    entries[#entries + 1] = timeline_entry('conversation.channel_switched', at_text, channel,
      ',"previous_channel":' .. cjson.encode(switched))
  end
  -- The current channel is in `channels` already: only a switch needs the list.
  if moved or not conv.channels then
    local channels = cjson.decode(conv.channels or '[]')
    local used = false
    for _, name in ipairs(channels) do
      if name == channel then used = true end
    end
    if not used then
      channels[#channels + 1] = channel
      set(conv, conv_changes, 'channels', cjson.encode(channels))
    end
  end
  set(conv, conv_changes, 'messages', tostring((tonumber(conv.messages) or 0) + 1))
  -- Wall-clock time of the latest message: the sweeper closes a conversation after
  -- `inactivity` without messages received, whatever times providers report.
  set(conv, conv_changes, 'touched_at', now_us)
  if at > tonumber(conv.last_at or '0') then set(conv, conv_changes, 'last_at', at_text) end
  -- Reply windows are per channel: `windows` maps channel → end (µs); `reply_until`
  -- is the current channel's, cleared when the current channel has none.
  local window
  if ARGV[16] ~= '' then
    local windows = cjson.decode(conv.windows or '{}')
    windows[channel] = num(at + tonumber(ARGV[16]))
    set(conv, conv_changes, 'windows', cjson.encode(windows))
    window = windows[channel]
  elseif conv.windows then
    window = cjson.decode(conv.windows)[channel]
  end
  if window then
    if window ~= conv.reply_until then set(conv, conv_changes, 'reply_until', window) end
  elseif conv.reply_until then
    redis.call('HDEL', conv_key, 'reply_until')
    conv.reply_until = false
  end
  -- Facts the outcome rules read: the customer's first message, and the first one not
  -- answered yet (any business message clears it).
  if ARGV[20] == 'inbound' then
    if not conv.first_in then
      set(conv, conv_changes, 'first_in', at_text)
      first_in = 'f'
    end
    if not conv.awaiting then set(conv, conv_changes, 'awaiting', at_text) end
  elseif ARGV[20] == 'outbound' and conv.awaiting then
    redis.call('HDEL', conv_key, 'awaiting')
    conv.awaiting = false
  end
  -- RPUSH answers the length: trim only once the history is over its cap.
  if redis.call('RPUSH', history_key, at_text .. ' ' .. ARGV[14]) > tonumber(ARGV[9]) then
    redis.call('LTRIM', history_key, -tonumber(ARGV[9]), -1)
  end
  entries[#entries + 1] = timeline_entry('message', at_text, channel, ',"message":' .. ARGV[14])
end
if ARGV[15] ~= '' then
  if not conv.first_touch then set(conv, conv_changes, 'first_touch', ARGV[15]) end
  set(conv, conv_changes, 'last_touch', ARGV[15])
  entries[#entries + 1] = timeline_entry('referral', at_text, channel, ',"referral":' .. ARGV[15])
end

if #contact_changes > 0 then redis.call('HSET', KEYS[1], unpack(contact_changes)) end
if #conv_changes > 0 then redis.call('HSET', conv_key, unpack(conv_changes)) end
if #entries > 0 then
  cap_timeline(conv_key, timeline_key, redis.call('RPUSH', timeline_key, unpack(entries)),
    tonumber(ARGV[19]))
end

if ARGV[18] ~= '' then owe(prefix, ARGV[3], now_us, conv_id, started, switched, ARGV[18]) end

if ARGV[17] ~= '' then
  retain(conv_key, history_key, timeline_key, now_ms * 1000 - tonumber(ARGV[17]),
    tonumber(ARGV[17]))
end

-- The reply `describe` would give, from the values held here.
local values = {}
for i, field in ipairs(CONVERSATION_FIELDS) do values[i] = conv[field] end
local out = reply({ contact.name, contact.created_at, contact.handles }, conv_id, values,
  history_key, tonumber(ARGV[10]), started .. first_in, switched)
if arrival then
  table.insert(out, 1, ARGV[2])
  table.insert(out, 1, arrival)
end
return out
