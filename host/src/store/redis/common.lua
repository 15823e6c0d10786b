-- Shared by the omnigate store scripts (prepended to each). Every key a script touches
-- starts with the contact's prefix `og:{<contact id>}:` given in ARGV[1], so in a Redis
-- Cluster the whole script runs in one slot.
-- Times are integer microseconds since the Unix epoch (exact in Lua's doubles).

local function num(value)
  return string.format('%.0f', value)
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

-- The history entries as stored ("<time µs> <JSON>": the gateway strips the time) of
-- the last `depth` of `count` messages after position `held`, but the last one when
-- `own` (the caller has it), appended to `out`. Entries from a position on are the
-- list's tail (recent.rs): message p of `count` is at index p - count - 1.
local function recent(out, history_key, count, depth, held, own)
  local last = count
  if own then last = count - 1 end
  local first = math.max(held + 1, count - depth + 1)
  if first <= last then
    local entries = redis.call('LRANGE', history_key, first - count - 1, last - count - 1)
    for i = 1, #entries do out[#out + 1] = entries[i] end
  end
end

-- The reply describing a contact and one conversation: { name, created_at, handles_json,
-- conv_id, CONVERSATION_FIELDS values..., flags, switched_from }, then when `depth` > 0
-- the conversation's `messages` and its history entries (`recent`); flags: '0' or '1'
-- (the event opened the conversation), then 'f' when it was the customer's first
-- message in it. From `contact` = { name, created_at, handles } and `conv` = the
-- CONVERSATION_FIELDS values. Missing values are ''.
local function describe(contact_key, conv_key, conv_id, history_key, depth, started, switched,
    held, own)
  local contact = redis.call('HMGET', contact_key, 'name', 'created_at', 'handles')
  local conv = redis.call('HMGET', conv_key, unpack(CONVERSATION_FIELDS))
  local out = { contact[1] or '', contact[2] or '', contact[3] or '[]', conv_id }
  for i = 1, #CONVERSATION_FIELDS do out[#out + 1] = conv[i] or '' end
  out[#out + 1] = started
  out[#out + 1] = switched
  if depth > 0 then
    -- `messages` is the eighth conversation field.
    local count = tonumber(conv[8] or '0')
    out[#out + 1] = num(count)
    recent(out, history_key, count, depth, held, own)
  end
  return out
end

-- Keep at most `cap` timeline entries (`length` after a push): drop the oldest, counted in
-- `tl_trimmed` so cursors stay stable.
local function cap_timeline(conv_key, timeline_key, length, cap)
  if length > cap then
    redis.call('LTRIM', timeline_key, length - cap, -1)
    redis.call('HINCRBY', conv_key, 'tl_trimmed', length - cap)
  end
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


-- The contact as stored, for a caller to decide again (the `stale` answer, see
-- `Head::parse` in plan.rs): { 'stale', owner, its hash's id, name, created_at, handles,
-- latest, hs, then its latest conversation's fields as name/value pairs }.
local function head(prefix, owner)
  local c = redis.call('HMGET', prefix .. 'c', 'id', 'name', 'created_at', 'handles', 'latest',
    'hs')
  local out = { 'stale', owner }
  for i = 1, 6 do out[#out + 1] = c[i] or '' end
  if c[5] then
    local fields = redis.call('HGETALL', prefix .. 'cv:' .. c[5])
    for i = 1, #fields do out[#out + 1] = fields[i] end
  end
  return out
end

-- Guards and writes a script is given, 4 arguments each from ARGV[from]: `guards`
-- guards, then writes to the end of ARGV. Each is: target (a name in `keys`, which maps
-- it to a hash key), operation, field, value.
--   Guards: 'eq' (field = value), 'no' (field absent), 'gt' / 'le' (field as a number
--   > / <= value; absent counts as 0).
--   Writes: 'set', 'del', 'inc' (adds; replies the new value), 'max' (set when greater;
--   replies the value kept), 'keep' (set when absent; replies '+' .. value when set,
--   '=' .. the value found otherwise), 'copy' (field := the field named by value,
--   deleted when that is absent; replies the value or ''), 'get' (writes nothing;
--   replies the field's value or ''); on a list target: 'rpush' (appends value),
--   'lset' (element number `field` := value).
-- `read_ops` reads everything they check, compare with or add to, with one HMGET per
-- hash, and the fields `extra` of target 'c' besides: found[key][field]; nil when a
-- guard names a target `keys` lacks.
local BLIND_WRITES = { set = true, del = true, rpush = true, lset = true }
local function read_ops(keys, from, guards, extra)
  local writes_from = from + 4 * guards
  local wanted, order = {}, {}
  local function want(target, field)
    local key = keys[target]
    if not wanted[key] then
      wanted[key] = {}
      order[#order + 1] = key
    end
    table.insert(wanted[key], field)
  end
  for _, field in ipairs(extra) do want('c', field) end
  for i = from, writes_from - 1, 4 do
    if not keys[ARGV[i]] then return nil end
    want(ARGV[i], ARGV[i + 2])
  end
  for i = writes_from, #ARGV, 4 do
    local op = ARGV[i + 1]
    if op == 'copy' then want(ARGV[i], ARGV[i + 3])
    elseif not BLIND_WRITES[op] then want(ARGV[i], ARGV[i + 2]) end
  end
  local found = {}
  for _, key in ipairs(order) do
    local got = redis.call('HMGET', key, unpack(wanted[key]))
    found[key] = {}
    for i, field in ipairs(wanted[key]) do found[key][field] = got[i] end
  end
  return found
end

-- Whether the guards (see `read_ops`) hold on what it found.
local function guards_hold(keys, found, from, guards)
  for i = from, from + 4 * guards - 1, 4 do
    local have = found[keys[ARGV[i]]][ARGV[i + 2]]
    local op, value = ARGV[i + 1], ARGV[i + 3]
    local holds
    if op == 'eq' then holds = have == value
    elseif op == 'no' then holds = not have
    elseif op == 'gt' then holds = tonumber(have or '0') > tonumber(value)
    else holds = tonumber(have or '0') <= tonumber(value) end
    if not holds then return false end
  end
  return true
end

-- Apply the writes from ARGV[from] (see `read_ops`), gathered into one HSET and one HDEL
-- per hash; returns their reply values. The script runs atomically, so an increment is
-- a read (by `read_ops`) and a set.
local function write_ops(keys, found, from)
  local sets, dels, replies = {}, {}, {}
  -- Appends field (and value, for a set) to the list of `target`; no table per call.
  local function add(list, target, field, value)
    local items = list[target]
    if not items then
      items = {}
      list[target] = items
    end
    items[#items + 1] = field
    if value then items[#items + 1] = value end
  end
  for i = from, #ARGV, 4 do
    local target, op, field, value = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
    local have = (found[keys[target]] or {})[op == 'copy' and value or field]
    if op == 'set' then add(sets, target, field, value)
    elseif op == 'del' then add(dels, target, field)
    elseif op == 'inc' then
      local total = num((tonumber(have) or 0) + tonumber(value))
      add(sets, target, field, total)
      replies[#replies + 1] = total
    elseif op == 'max' then
      if not have or tonumber(have) < tonumber(value) then
        add(sets, target, field, value)
        have = value
      end
      replies[#replies + 1] = have
    elseif op == 'keep' then
      if have then
        replies[#replies + 1] = '=' .. have
      else
        add(sets, target, field, value)
        replies[#replies + 1] = '+' .. value
      end
    elseif op == 'copy' then
      if have then add(sets, target, field, have) else add(dels, target, field) end
      replies[#replies + 1] = have or ''
    elseif op == 'rpush' then redis.call('RPUSH', keys[target], value)
    elseif op == 'lset' then redis.call('LSET', keys[target], tonumber(field), value)
    else
      replies[#replies + 1] = have or ''
    end
  end
  for target, list in pairs(sets) do redis.call('HSET', keys[target], unpack(list)) end
  for target, list in pairs(dels) do redis.call('HDEL', keys[target], unpack(list)) end
  return replies
end

-- Append a history entry ("<time µs> <JSON>"; '' adds nothing), keeping at most `cap`.
local function push_history(history_key, entry, cap)
  -- RPUSH answers the length: trim only once the history is over its cap.
  if entry ~= '' and redis.call('RPUSH', history_key, entry) > cap then
    redis.call('LTRIM', history_key, -cap, -1)
  end
end

-- Append timeline entries (JSON, \30-joined; '' adds nothing), keeping at most `cap`
-- (nil: no cap).
local function push_timeline(conv_key, timeline_key, joined, cap)
  if joined == '' then return end
  local length
  if not string.find(joined, '\30', 1, true) then
    -- One entry (nearly every message): no pattern matching.
    length = redis.call('RPUSH', timeline_key, joined)
  else
    local entries = {}
    for entry in string.gmatch(joined, '[^\30]+') do entries[#entries + 1] = entry end
    length = redis.call('RPUSH', timeline_key, unpack(entries))
  end
  if cap then cap_timeline(conv_key, timeline_key, length, cap) end
end
