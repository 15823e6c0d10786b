-- The lookup half of the ingest script before the context rules moved to Rust (kept as
-- the baseline of tests/benches/store_rules.rs; prepended to ingest.lua).
-- How the sender was found: 'known' or 'new'.
local arrival
-- Find the sender's contact and record its event, in one request (see
-- `RedisStore::arrive`); prepended to ingest.lua, which then runs on that contact.
-- KEYS[1] the sender's channel-user handle key  og:hd:{channel_user:…}
-- ARGV 1..21 as ingest.lua, except ARGV[1] = the key root ('og:') and ARGV[2] = '': the
--   contact is the handle's owner. Then:
-- ARGV[22] the slot of KEYS[1] in a Redis Cluster, '' on one server
-- ARGV[23] a new contact id in that slot, for a sender seen for the first time; '' when
--   the client must resolve a new sender itself (it reports verified handles)
-- ARGV[24] the contact hash fields ('v:<kind>:<value>', \31-joined) of the verified
--   handles the sender reports, or ''
-- Returns, with nothing written: {'check'} when the client must resolve the sender itself
-- (new with verified handles, or a verified handle the contact does not hold as its
-- own yet), {'moved', owner} when the owner's keys live in another slot (a contact made
-- before home slots, or a survivor of a merge). Else what ingest.lua returns, preceded
-- by 'known' or 'new' (the handle was claimed here) and the contact id.
local owner = redis.call('GET', KEYS[1])
if not owner then
  if ARGV[23] == '' then return { 'check' } end
  owner = ARGV[23]
  redis.call('SET', KEYS[1], owner)
  arrival = 'new'
else
  -- Keys of another slot are refused by a Cluster node that does not hold it, and on one
  -- that does they would be read without the slot's migration checks: never touch them.
  if ARGV[22] ~= '' and redis.call('CLUSTER', 'KEYSLOT', owner) ~= tonumber(ARGV[22]) then
    return { 'moved', owner }
  end
  arrival = 'known'
end
local prefix = ARGV[1] .. '{' .. owner .. '}:'
if arrival == 'known' and ARGV[24] ~= '' then
  local fields = split(ARGV[24])
  local held = redis.call('HMGET', prefix .. 'c', unpack(fields))
  for i = 1, #fields do
    if not held[i] then return { 'check' } end
  end
end
KEYS[1] = prefix .. 'c'
KEYS[2] = prefix .. 'seen'
KEYS[3] = prefix .. 'cvs'
ARGV[1] = prefix
ARGV[2] = owner
