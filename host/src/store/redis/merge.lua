-- Record the merge of a contact into the survivor (see `RedisStore::merge`): once per
-- live (absorbed, survivor) pair, atomically with adding the moved handles.
-- KEYS[1] survivor contact hash og:{ct}:c   KEYS[2] survivor merges list og:{ct}:merges
-- ARGV: 1 merge record JSON  2 absorbed contact id  3 moved handles (JSON array)
--       4 survivor key prefix  5 now (µs)  6 the payload of the contact.merged the merge
--       owes ('' owes nothing; a link token's merge owes it: see `link_sender`)
-- Returns {'conflict', <contact it is merged into>} | {'existing', record} | {'new', record}.
-- The owed record (`merged\31<merge id>`, with the live merge) is written for a new merge
-- and again for an existing one (a retry completing a merge a crash cut short: its own
-- event replaces the record's).
local function owe_merge(raw)
  if ARGV[6] == '' then return end
  local id = cjson.decode(raw).id
  owe(ARGV[4], 'merged\31' .. id, ARGV[5], '', '0', '', raw .. '\31' .. ARGV[6])
end
if redis.call('HEXISTS', KEYS[1], 'id') == 0 then
  return { 'missing', '' }
end
local into = redis.call('HGET', KEYS[1], 'merged_into')
if into then
  return { 'conflict', into }
end
for _, raw in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
  local record = cjson.decode(raw)
  if record.absorbed == ARGV[2] and record.undone_at == nil then
    owe_merge(raw)
    return { 'existing', raw }
  end
end
update_handles(KEYS[1], ARGV[3], '')
redis.call('RPUSH', KEYS[2], ARGV[1])
owe_merge(ARGV[1])
return { 'new', ARGV[1] }
