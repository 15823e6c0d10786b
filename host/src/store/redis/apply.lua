-- Record one inbound event as the context rules decided it (see `RedisStore::apply` and
-- plan.rs): the script decides nothing. It finds the sender's contact, checks that the
-- facts the decision read still hold (guards), dedupes, and applies the writes it was
-- given, atomically in the contact's slot.
--
-- KEYS[1] the sender's channel-user handle key og:hd:{channel_user:…} (ARGV[2] = ''),
--         or the contact hash og:{ct}:c (ARGV[2] = the contact id)
-- ARGV  1 key root 'og:'   2 contact id, or '' for the handle's owner
--       3 dedupe member "<channel>\31<external id>"   4 now (ms)   5 dedupe ttl (ms)
--       6 the conversation the event lands on (v)
--       7 the contact's latest conversation as the caller saw it (l), '' for none
--       8 the `conversation.closed` timeline entry of l when the event closes it, or ''
--       9 '1' when the event opens conversation v, else ''
--      10 history entry "<time µs> <JSON>" or ''   11 history cap   12 history depth
--      13 timeline entries of v (JSON, \30-joined) or ''   14 timeline cap
--      15 the owed record (as `owe` in common.lua writes it) or ''
--      16 message retention (µs) or ''
--      17 the slot of KEYS[1] in a Redis Cluster, '' on one server     } only when
--      18 a new contact id in that slot for a sender seen for the first  } ARGV[2] = ''
--         time, '' when the client must resolve a new sender itself      }
--      19 contact hash fields ('v:<kind>:<value>', \31-joined) of verified handles the
--         sender reports, which a known contact must hold, or ''
--      20 G, the number of guards; then G guards and then the writes, 4 arguments each:
--         target ('c' contact, 'l' latest conversation, 'v' the event's conversation),
--         operation, field, value.
--         Guards: 'eq' (field = value), 'no' (field absent), 'gt' / 'le' (field as a
--         number > / <= value; absent counts as 0).
--         Writes: 'set', 'del', 'inc' (adds; replies the new value), 'max' (set when
--         greater; replies the value kept), 'keep' (set when absent; replies '+' .. value
--         when set, '=' .. the value found otherwise), 'copy' (field := the field named by
--         value, deleted when that is absent; replies the value or ''), 'get' (writes
--         nothing; replies the field's value or '').
-- Returns, with nothing written: {'check'} (the client must resolve the sender itself),
-- {'moved', owner} (the owner's keys live in another slot), {'stale', owner, head...}
-- (a guard failed: the contact as stored, see `head`), or false for a duplicate. Else
-- {'known' | 'new' | 'ok', owner, n, n reply values of the writes, history...}.
local owner
local arrival = 'ok'
if ARGV[2] == '' then
  owner = redis.call('GET', KEYS[1])
  if not owner then
    if ARGV[18] == '' then return { 'check' } end
    owner = ARGV[18]
    redis.call('SET', KEYS[1], owner)
    arrival = 'new'
  else
    -- Keys of another slot are refused by a Cluster node that does not hold it, and on
    -- one that does they would be read without the slot's migration checks: never touch
    -- them.
    if ARGV[17] ~= '' and redis.call('CLUSTER', 'KEYSLOT', owner) ~= tonumber(ARGV[17]) then
      return { 'moved', owner }
    end
    arrival = 'known'
  end
else
  owner = ARGV[2]
end
local prefix = ARGV[1] .. '{' .. owner .. '}:'
local keys = { c = prefix .. 'c', v = prefix .. 'cv:' .. ARGV[6] }
if ARGV[7] ~= '' then keys.l = prefix .. 'cv:' .. ARGV[7] end

-- The contact as stored, for the caller to decide again: its hash fields, then its
-- latest conversation's fields as name/value pairs.
local function head()
  local c = redis.call('HMGET', keys.c, 'id', 'name', 'created_at', 'handles', 'latest', 'hs')
  local out = { 'stale', owner }
  for i = 1, 6 do out[#out + 1] = c[i] or '' end
  if c[5] then
    local fields = redis.call('HGETALL', prefix .. 'cv:' .. c[5])
    for i = 1, #fields do out[#out + 1] = fields[i] end
  end
  return out
end

-- Everything the verified handles, the guards and the writes check, compare with or add
-- to, read with one HMGET per hash (the latest conversation and the event's are one hash
-- when it continues): found[key][field].
local guards = tonumber(ARGV[20])
local writes_from = 21 + 4 * guards
local wanted, order = {}, {}
local function want(target, field)
  local key = keys[target]
  if not wanted[key] then
    wanted[key] = {}
    order[#order + 1] = key
  end
  table.insert(wanted[key], field)
end
-- A known contact must hold the verified handles the sender reports as its own.
local verified = {}
if arrival == 'known' and ARGV[19] ~= '' then verified = split(ARGV[19]) end
for _, field in ipairs(verified) do want('c', field) end
for i = 21, writes_from - 1, 4 do
  if not keys[ARGV[i]] then return head() end
  want(ARGV[i], ARGV[i + 2])
end
for i = writes_from, #ARGV, 4 do
  local op = ARGV[i + 1]
  if op == 'copy' then want(ARGV[i], ARGV[i + 3])
  elseif op ~= 'set' and op ~= 'del' then want(ARGV[i], ARGV[i + 2]) end
end
local found = {}
for _, key in ipairs(order) do
  local got = redis.call('HMGET', key, unpack(wanted[key]))
  found[key] = {}
  for i, field in ipairs(wanted[key]) do found[key][field] = got[i] end
end
for _, field in ipairs(verified) do
  if not found[keys.c][field] then return { 'check' } end
end
for i = 21, writes_from - 1, 4 do
  local have = found[keys[ARGV[i]]][ARGV[i + 2]]
  local op, value = ARGV[i + 1], ARGV[i + 3]
  local holds
  if op == 'eq' then holds = have == value
  elseif op == 'no' then holds = not have
  elseif op == 'gt' then holds = tonumber(have or '0') > tonumber(value)
  else holds = tonumber(have or '0') <= tonumber(value) end
  if not holds then return head() end
end

-- Dedupe: a member present and not yet expired is a duplicate; an expired one is renewed.
-- Other expired members are swept on about one call in 16 (by the clock's millisecond).
local seen = prefix .. 'seen'
local now_ms = tonumber(ARGV[4])
local expires = now_ms + tonumber(ARGV[5])
if redis.call('ZADD', seen, 'NX', expires, ARGV[3]) == 0 then
  if tonumber(redis.call('ZSCORE', seen, ARGV[3])) > now_ms then
    return false
  end
  redis.call('ZADD', seen, expires, ARGV[3])
end
if now_ms % 16 == 0 then
  redis.call('ZREMRANGEBYSCORE', seen, '-inf', ARGV[4])
end

-- Writes, gathered into one HSET and one HDEL per hash. The script runs atomically, so
-- an increment is a read (above) and a set.
local sets, dels, replies = {}, {}, {}
local function add(list, target, ...)
  list[target] = list[target] or {}
  for _, value in ipairs({ ... }) do table.insert(list[target], value) end
end
for i = writes_from, #ARGV, 4 do
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
  else
    replies[#replies + 1] = have or ''
  end
end
if ARGV[9] == '1' then
  -- A contact made here (a new sender) gets its id; the conversation names its contact.
  redis.call('HSETNX', keys.c, 'id', owner)
  redis.call('HSET', keys.v, 'contact', owner)
  redis.call('RPUSH', prefix .. 'cvs', ARGV[6])
end
for target, list in pairs(sets) do redis.call('HSET', keys[target], unpack(list)) end
for target, list in pairs(dels) do redis.call('HDEL', keys[target], unpack(list)) end

if ARGV[8] ~= '' then
  redis.call('RPUSH', prefix .. 'tl:' .. ARGV[7], ARGV[8])
end
local history_key = prefix .. 'h:' .. ARGV[6]
local timeline_key = prefix .. 'tl:' .. ARGV[6]
local cap = tonumber(ARGV[11])
-- RPUSH answers the length: trim only once the history is over its cap.
if ARGV[10] ~= '' and redis.call('RPUSH', history_key, ARGV[10]) > cap then
  redis.call('LTRIM', history_key, -cap, -1)
end
if ARGV[13] ~= '' then
  local entries = {}
  for entry in string.gmatch(ARGV[13], '[^\30]+') do entries[#entries + 1] = entry end
  cap_timeline(keys.v, timeline_key, redis.call('RPUSH', timeline_key, unpack(entries)),
    tonumber(ARGV[14]))
end
if ARGV[15] ~= '' then redis.call('HSET', prefix .. 'owed', ARGV[3], ARGV[15]) end
if ARGV[16] ~= '' then
  retain(keys.v, history_key, timeline_key, now_ms * 1000 - tonumber(ARGV[16]),
    tonumber(ARGV[16]))
end

local out = { arrival, owner, tostring(#replies) }
for i = 1, #replies do out[#out + 1] = replies[i] end
local depth = tonumber(ARGV[12])
if depth > 0 then
  local entries = redis.call('LRANGE', history_key, -depth, -1)
  for i = 1, #entries do out[#out + 1] = history_json(entries[i]) end
end
return out
