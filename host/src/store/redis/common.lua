-- Shared by the omnigate store scripts (prepended to each). Every key a script touches
-- starts with the contact's prefix `og:{<contact id>}:` given in ARGV[1], so in a Redis
-- Cluster the whole script runs in one slot.
-- Times are integer microseconds since the Unix epoch (exact in Lua's doubles).

local function num(value)
  return string.format('%.0f', value)
end

-- The reply describing a contact, one conversation and the last `depth` messages:
-- { name, created_at, handles_json, conversation fields (see FIELDS in mod.rs)...,
--   started, switched_from, history... }. Missing values are ''.
local function describe(contact_key, conv_key, conv_id, history_key, depth, started, switched)
  local c = redis.call('HMGET', contact_key, 'name', 'created_at', 'handles')
  local v = redis.call('HMGET', conv_key, 'contact', 'status', 'started_at', 'last_at',
    'channels', 'current', 'previous', 'messages', 'reply_until', 'first_touch', 'last_touch')
  local out = { c[1] or '', c[2] or '', c[3] or '[]', conv_id }
  for i = 1, 11 do out[#out + 1] = v[i] or '' end
  out[#out + 1] = started
  out[#out + 1] = switched
  if depth > 0 then
    local entries = redis.call('LRANGE', history_key, -depth, -1)
    for i = 1, #entries do out[#out + 1] = entries[i] end
  end
  return out
end

-- Add handles (verified wins) to and remove handles from the JSON list in field `handles`
-- of the contact hash `key`; an existing handle keeps its place.
local function update_handles(key, add_json, remove_json)
  local known = cjson.decode(redis.call('HGET', key, 'handles') or '[]')
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
  if changed then
    if #known == 0 then
      redis.call('HSET', key, 'handles', '[]')
    else
      redis.call('HSET', key, 'handles', cjson.encode(known))
    end
  end
end

-- Append a timeline entry (JSON object text) to the conversation's timeline.
-- `fields` is a JSON fragment of extra members (starting with a comma) or ''.
local function timeline(prefix, conv_id, kind, at, channel, fields)
  redis.call('RPUSH', prefix .. 'tl:' .. conv_id,
    '{"type":' .. cjson.encode(kind) .. ',"at_us":' .. num(at) .. ',"channel":' ..
    cjson.encode(channel) .. fields .. '}')
end
