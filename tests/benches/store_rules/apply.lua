-- The guarded applier measured by tests/benches/store_rules.rs (not used by the gateway
-- yet): the context rules decide in Rust from a cached copy of the contact's state, and
-- the script only checks that copy is current and applies the writes it was given.
-- KEYS[1] handle key
-- ARGV 1 root  2 expected version ('' = sender unknown: create)  3 new contact id
--      4 dedupe member  5 now ms  6 ttl ms  7 contact writes (\31 k/v)  8 conversation id
--      9 conversation writes (\31 k/v)  10 conversation deletes (\31)  11 history entry
--      12 history cap  13 timeline entries (\30-separated)  14 timeline cap
--      15 owed record value or ''  16 history depth  17 new conversation (1/'')
local function split(list, sep)
  local out = {}
  if list == '' then return out end
  for value in string.gmatch(list, '[^' .. sep .. ']+') do out[#out + 1] = value end
  return out
end
local owner = redis.call('GET', KEYS[1])
if not owner then
  if ARGV[2] ~= '' then return { 'stale' } end
  owner = ARGV[3]
  redis.call('SET', KEYS[1], owner)
end
local prefix = ARGV[1] .. '{' .. owner .. '}:'
local c = prefix .. 'c'
local ver = redis.call('HGET', c, 'ver') or ''
if ver ~= ARGV[2] and not (ver == '' and ARGV[2] == '') then
  -- the head, for the client to decide again
  return { 'stale', owner }
end
local now_ms = tonumber(ARGV[5])
local expires = now_ms + tonumber(ARGV[6])
local seen = prefix .. 'seen'
if redis.call('ZADD', seen, 'NX', expires, ARGV[4]) == 0 then
  if tonumber(redis.call('ZSCORE', seen, ARGV[4])) > now_ms then return false end
  redis.call('ZADD', seen, expires, ARGV[4])
end
if now_ms % 16 == 0 then redis.call('ZREMRANGEBYSCORE', seen, '-inf', ARGV[5]) end
local cw = split(ARGV[7], '\31')
redis.call('HSET', c, 'ver', tostring((tonumber(ver) or 0) + 1), unpack(cw))
local conv_key = prefix .. 'cv:' .. ARGV[8]
local vw = split(ARGV[9], '\31')
if #vw > 0 then redis.call('HSET', conv_key, unpack(vw)) end
local del = split(ARGV[10], '\31')
if #del > 0 then redis.call('HDEL', conv_key, unpack(del)) end
if ARGV[17] ~= '' then redis.call('RPUSH', prefix .. 'cvs', ARGV[8]) end
local history_key = prefix .. 'h:' .. ARGV[8]
if ARGV[11] ~= '' then
  if redis.call('RPUSH', history_key, ARGV[11]) > tonumber(ARGV[12]) then
    redis.call('LTRIM', history_key, -tonumber(ARGV[12]), -1)
  end
end
local entries = split(ARGV[13], '\30')
if #entries > 0 then
  local tl = prefix .. 'tl:' .. ARGV[8]
  local length = redis.call('RPUSH', tl, unpack(entries))
  local cap = tonumber(ARGV[14])
  if length > cap then
    redis.call('LTRIM', tl, length - cap, -1)
    redis.call('HINCRBY', conv_key, 'tl_trimmed', length - cap)
  end
end
if ARGV[15] ~= '' then redis.call('HSET', prefix .. 'owed', ARGV[4], ARGV[15]) end
local out = { 'ok', owner }
local depth = tonumber(ARGV[16])
if depth > 0 then
  local h = redis.call('LRANGE', history_key, -depth, -1)
  for i = 1, #h do out[#out + 1] = h[i] end
end
return out
