-- The store scripts' shared functions as they were before the context rules moved to
-- Rust (commit 01934c5): the baseline of tests/benches/store_rules.rs, with arrive.lua and
-- ingest.lua. Not used by the gateway.

-- Shared by the omnigate store scripts (prepended to each). Every key a script touches
-- starts with the contact's prefix `og:{<contact id>}:` given in ARGV[1], so in a Redis
-- Cluster the whole script runs in one slot.
-- Times are integer microseconds since the Unix epoch (exact in Lua's doubles).

local function num(value)
  return string.format('%.0f', value)
end

-- History entries are stored as "<time µs> <JSON>", so retention can trim by time.
local function history_json(stored)
  local space = string.find(stored, ' ', 1, true)
  if space then return string.sub(stored, space + 1) end
  return stored
end

-- Apply message retention to a conversation: drop history and timeline entries older
-- than `cutoff` (µs; nil = keep) from the front, a bounded number per call, and let both
-- lists expire when the conversation stays idle longer than `retention` (µs).
local function retain(conv_key, history_key, timeline_key, cutoff, retention)
  if not cutoff then return end
  for _ = 1, 20 do
    local head = redis.call('LINDEX', history_key, 0)
    local time = head and string.match(head, '^(%d+) ')
    if not time or tonumber(time) >= cutoff then break end
    redis.call('LPOP', history_key)
  end
  for _ = 1, 20 do
    local head = redis.call('LINDEX', timeline_key, 0)
    if not head or cjson.decode(head).at_us >= cutoff then break end
    redis.call('LPOP', timeline_key)
    redis.call('HINCRBY', conv_key, 'tl_trimmed', 1)
  end
  local seconds = math.ceil(retention / 1000000)
  redis.call('EXPIRE', history_key, seconds)
  redis.call('EXPIRE', timeline_key, seconds)
end

-- The conversation hash fields a reply carries, in order (CONVERSATION_HASH_FIELDS in
-- mod.rs).
local CONVERSATION_FIELDS = { 'contact', 'status', 'started_at', 'last_at', 'channels',
  'current', 'previous', 'messages', 'reply_until', 'first_touch', 'last_touch', 'first_in',
  'awaiting' }

-- The reply describing a contact, one conversation and the last `depth` messages:
-- { name, created_at, handles_json, conv_id, CONVERSATION_FIELDS values..., flags,
--   switched_from, history... }; flags: '0' or '1' (the event opened the conversation),
--   then 'f' when it was the customer's first message in it, from `contact` = { name, created_at, handles } and
-- `conv` = the CONVERSATION_FIELDS values. Missing values are ''.
local function reply(contact, conv_id, conv, history_key, depth, started, switched)
  local out = { contact[1] or '', contact[2] or '', contact[3] or '[]', conv_id }
  for i = 1, #CONVERSATION_FIELDS do out[#out + 1] = conv[i] or '' end
  out[#out + 1] = started
  out[#out + 1] = switched
  if depth > 0 then
    local entries = redis.call('LRANGE', history_key, -depth, -1)
    for i = 1, #entries do out[#out + 1] = history_json(entries[i]) end
  end
  return out
end

-- `reply` for the contact and conversation as stored.
local function describe(contact_key, conv_key, conv_id, history_key, depth, started, switched)
  local c = redis.call('HMGET', contact_key, 'name', 'created_at', 'handles')
  local v = redis.call('HMGET', conv_key, unpack(CONVERSATION_FIELDS))
  return reply(c, conv_id, v, history_key, depth, started, switched)
end

-- The JSON list of handles `known_json` with `add_json` added (verified wins; an existing
-- handle keeps its place) and `remove_json` removed; nil when nothing changed.
local function merged_handles(known_json, add_json, remove_json)
  local known = cjson.decode(known_json or '[]')
  local changed = false
  if remove_json ~= '' then
    local kept = {}
    for _, have in ipairs(known) do
      local drop = false
      for _, gone in ipairs(cjson.decode(remove_json)) do
        if gone.kind == have.kind and gone.value == have.value then drop = true end
      end
      if drop then changed = true else kept[#kept + 1] = have end
    end
    known = kept
  end
  for _, handle in ipairs(cjson.decode(add_json)) do
    local found = false
    for _, have in ipairs(known) do
      if have.kind == handle.kind and have.value == handle.value then
        found = true
        if handle.verified and not have.verified then
          have.verified = true
          changed = true
        end
      end
    end
    if not found then
      known[#known + 1] = handle
      changed = true
    end
  end
  if not changed then return nil end
  -- cjson encodes an empty table as an object.
  if #known == 0 then return '[]' end
  return cjson.encode(known)
end

-- Update the JSON list in field `handles` of the contact hash `key` (see merged_handles).
local function update_handles(key, add_json, remove_json)
  local merged = merged_handles(redis.call('HGET', key, 'handles'), add_json, remove_json)
  if merged then
    redis.call('HSET', key, 'handles', merged)
    -- The ingest's shortcut for unchanged handles no longer holds (see plan.rs).
    redis.call('HDEL', key, 'hs')
  end
end

-- A timeline entry (JSON object text); `at` is µs as a decimal string, `fields` a JSON
-- fragment of extra members (starting with a comma) or ''.
local function timeline_entry(kind, at, channel, fields)
  return '{"type":' .. cjson.encode(kind) .. ',"at_us":' .. at .. ',"channel":' ..
    cjson.encode(channel) .. fields .. '}'
end

-- Keep at most `cap` timeline entries (`length` after a push): drop the oldest, counted in
-- `tl_trimmed` so cursors stay stable.
local function cap_timeline(conv_key, timeline_key, length, cap)
  if length > cap then
    redis.call('LTRIM', timeline_key, length - cap, -1)
    redis.call('HINCRBY', conv_key, 'tl_trimmed', length - cap)
  end
end

-- Append a timeline entry to the conversation's timeline.
local function timeline(prefix, conv_id, kind, at, channel, fields)
  redis.call('RPUSH', prefix .. 'tl:' .. conv_id, timeline_entry(kind, num(at), channel, fields))
end

-- Keep what a change owes its subscribers until the publisher settles it (field `key` of
-- `<prefix>owed`): '<commit µs>\31<conversation>\31<started 0|1>\31<switched from>\31' ..
-- tail, where tail is '<merge JSON or empty>\31<payload>' from the caller.
local function owe(prefix, key, now_us, conv_id, started, switched, tail)
  redis.call('HSET', prefix .. 'owed', key,
    now_us .. '\31' .. conv_id .. '\31' .. started .. '\31' .. switched .. '\31' .. tail)
end

-- The values of a \31-separated list ('' is the empty list).
local function split(list)
  local out = {}
  if list == '' then return out end
  for value in string.gmatch(list, '[^\31]+') do out[#out + 1] = value end
  return out
end

