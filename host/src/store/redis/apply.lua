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
--      13 the position of v's last message the caller holds (0: none; recent.rs)
--      14 timeline entries of v (JSON, \30-joined) or ''   15 timeline cap
--      16 the owed record (as `owe` in common.lua writes it) or ''
--      17 message retention (µs) or ''
--      18 the slot of KEYS[1] in a Redis Cluster, '' on one server     } only when
--      19 a new contact id in that slot for a sender seen for the first  } ARGV[2] = ''
--         time, '' when the client must resolve a new sender itself      }
--      20 contact hash fields ('v:<kind>:<value>', \31-joined) of verified handles the
--         sender reports, which a known contact must hold, or ''
--      21 G, the number of guards; then G guards and then the writes, 4 arguments each
--         (or 'F' / 'R' and the short form of a continuing message, see below):
--         target ('c' contact, 'l' latest conversation, 'v' the event's conversation),
--         operation, field, value (`read_ops` in common.lua says what each does).
-- Returns, with nothing written: {'check'} (the client must resolve the sender itself),
-- {'moved', owner} (the owner's keys live in another slot), {'stale', owner, head...}
-- (a guard failed: the contact as stored, see `head` in common.lua), or false for a duplicate. Else
-- {'known' | 'new' | 'ok', owner, n, n reply values of the writes}, followed when the
-- history depth is not 0 by v's `messages` and the history entries (as stored) of the
-- last `depth` messages after position ARGV[13], the event's own excluded: the caller
-- has those.
local owner
local arrival = 'ok'
if ARGV[2] == '' then
  owner = redis.call('GET', KEYS[1])
  if not owner then
    if ARGV[19] == '' then return { 'check' } end
    -- Claimed below, once the event is known to be recorded.
    owner = ARGV[19]
    arrival = 'new'
  else
    -- Keys of another slot are refused by a Cluster node that does not hold it, and on
    -- one that does they would be read without the slot's migration checks: never touch
    -- them.
    if ARGV[18] ~= '' and redis.call('CLUSTER', 'KEYSLOT', owner) ~= tonumber(ARGV[18]) then
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

-- Dedupe: a member present and not yet expired is a duplicate; an expired one is renewed.
-- Other expired members are swept on about one call in 16 (by the clock's millisecond).
local seen = prefix .. 'seen'
local now_ms = tonumber(ARGV[4])
local function duplicate()
  local expires = now_ms + tonumber(ARGV[5])
  if redis.call('ZADD', seen, 'NX', expires, ARGV[3]) == 0 then
    if tonumber(redis.call('ZSCORE', seen, ARGV[3])) > now_ms then return true end
    redis.call('ZADD', seen, expires, ARGV[3])
  end
  if now_ms % 16 == 0 then
    redis.call('ZREMRANGEBYSCORE', seen, '-inf', ARGV[4])
  end
  return false
end

-- A known contact must hold the verified handles the sender reports as its own.
local verified = {}
if arrival == 'known' and ARGV[20] ~= '' then verified = split(ARGV[20]) end
local replies
if ARGV[21] == 'F' or ARGV[21] == 'R' then
  -- The short form of a message continuing an open conversation with nothing else to
  -- change, or ('R') nothing but a referral (nearly every message; `short_form` in
  -- plan.rs): the same guards and writes as the list form, at fixed places. ARGV 22
  -- `hs`, 23 `latest`, 24 `sv` ('' when absent), 25 the conversation must be active
  -- after this (`last_at` >), 26 its channel, 27 the event time (`last_at` kept at the
  -- maximum), 28 `touched_at`, 29 `first_in` and 30 `awaiting` (each set when absent);
  -- 'R': 31 the referral (`first_touch` when absent, `last_touch`; `sv` incremented).
  local touched = ARGV[21] == 'R'
  local fields = { 'hs', 'latest' }
  for _, field in ipairs(verified) do fields[#fields + 1] = field end
  local c = redis.call('HMGET', keys.c, unpack(fields))
  for i = 3, #fields do
    if not c[i] then return { 'check' } end
  end
  if c[1] ~= ARGV[22] or c[2] ~= ARGV[23] then return head(prefix, owner) end
  local v = redis.call('HMGET', keys.v, 'status', 'sv', 'last_at', 'current', 'messages',
    'reply_until', 'first_in', 'awaiting', 'first_touch')
  if v[1] ~= 'open' or (v[2] or '') ~= ARGV[24] or tonumber(v[3] or '0') <= tonumber(ARGV[25])
    or v[4] ~= ARGV[26] then
    return head(prefix, owner)
  end
  if duplicate() then return false end
  local sets = {}
  replies = {}
  local function set(field, value)
    sets[#sets + 1] = field
    sets[#sets + 1] = value
  end
  -- Replies in the list form's order: sv ('R'), messages, last_at, reply_until,
  -- first_in, awaiting, first_touch ('R').
  local function keep(field, have, value)
    if have then
      replies[#replies + 1] = '=' .. have
    else
      replies[#replies + 1] = '+' .. value
      set(field, value)
    end
  end
  if touched then
    local sv = num((tonumber(v[2]) or 0) + 1)
    set('sv', sv)
    replies[1] = sv
  end
  local messages = num((tonumber(v[5]) or 0) + 1)
  set('messages', messages)
  replies[#replies + 1] = messages
  local last = v[3]
  if tonumber(last) < tonumber(ARGV[27]) then last = ARGV[27] end
  set('last_at', last)
  replies[#replies + 1] = last
  set('touched_at', ARGV[28])
  replies[#replies + 1] = v[6] or ''
  keep('first_in', v[7], ARGV[29])
  keep('awaiting', v[8], ARGV[30])
  if touched then
    keep('first_touch', v[9], ARGV[31])
    set('last_touch', ARGV[31])
  end
  redis.call('HSET', keys.v, unpack(sets))
else
  local guards = tonumber(ARGV[21])
  local found = read_ops(keys, 22, guards, verified)
  if not found then return head(prefix, owner) end
  for _, field in ipairs(verified) do
    if not found[keys.c][field] then return { 'check' } end
  end
  if not guards_hold(keys, found, 22, guards) then return head(prefix, owner) end
  if duplicate() then return false end
  if arrival == 'new' then redis.call('SET', KEYS[1], owner) end
  if ARGV[9] == '1' then
    -- A contact made here (a new sender) gets its id; the conversation names its contact.
    redis.call('HSETNX', keys.c, 'id', owner)
    redis.call('HSET', keys.v, 'contact', owner)
    redis.call('RPUSH', prefix .. 'cvs', ARGV[6])
  end
  replies = write_ops(keys, found, 22 + 4 * guards)
end

if ARGV[8] ~= '' then
  redis.call('RPUSH', prefix .. 'tl:' .. ARGV[7], ARGV[8])
end
local history_key = prefix .. 'h:' .. ARGV[6]
local timeline_key = prefix .. 'tl:' .. ARGV[6]
push_history(history_key, ARGV[10], tonumber(ARGV[11]))
push_timeline(keys.v, timeline_key, ARGV[14], tonumber(ARGV[15]))
if ARGV[16] ~= '' then redis.call('HSET', prefix .. 'owed', ARGV[3], ARGV[16]) end
if ARGV[17] ~= '' then
  retain(keys.v, history_key, timeline_key, now_ms * 1000 - tonumber(ARGV[17]),
    tonumber(ARGV[17]))
end

local out = { arrival, owner, tostring(#replies) }
for i = 1, #replies do out[#out + 1] = replies[i] end
local depth = math.min(tonumber(ARGV[12]), tonumber(ARGV[11]))
if depth > 0 then
  local count = tonumber(redis.call('HGET', keys.v, 'messages') or '0')
  out[#out + 1] = num(count)
  recent(out, history_key, count, depth, tonumber(ARGV[13]), ARGV[10] ~= '')
end
return out
