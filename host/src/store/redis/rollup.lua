-- Add counter changes to one bucket's tables, once per debt key (see
-- `OutcomeStore::add_rollups`): a bucket that has seen any of the keys takes nothing,
-- so a retried publish adds nothing and a batch never counts a debt twice.
-- KEYS[1] og:ru:{<bucket>}:once   set of keys applied (expires after 30 days)
-- ARGV: 1 number of keys k  2..k+1 the keys  k+2 table key prefix og:ru:{<bucket>}:
--       then triples table, field, n (the keys' changes, summed)
local k = tonumber(ARGV[1])
if k > 0 then
  local once = {unpack(ARGV, 2, k + 1)}
  for _, seen in ipairs(redis.call('SMISMEMBER', KEYS[1], unpack(once))) do
    if seen == 1 then
      return 0
    end
  end
  redis.call('SADD', KEYS[1], unpack(once))
end
redis.call('EXPIRE', KEYS[1], 2592000)
local prefix = ARGV[k + 2]
for i = k + 3, #ARGV, 3 do
  local key = prefix .. ARGV[i]
  if redis.call('HINCRBY', key, ARGV[i + 1], ARGV[i + 2]) == 0 then
    redis.call('HDEL', key, ARGV[i + 1])
  end
end
return 1
