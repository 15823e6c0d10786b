-- Add counter changes to one bucket's tables, once per key (see
-- `OutcomeStore::add_rollups`): a retried publish adds nothing.
-- KEYS[1] og:ru:{<bucket>}:once   set of keys applied (expires after 30 days)
-- ARGV: 1 key  2 table key prefix og:ru:{<bucket>}:  then triples table, field, n
if redis.call('SADD', KEYS[1], ARGV[1]) == 0 then
  return 0
end
redis.call('EXPIRE', KEYS[1], 2592000)
for i = 3, #ARGV, 3 do
  local key = ARGV[2] .. ARGV[i]
  if redis.call('HINCRBY', key, ARGV[i + 1], ARGV[i + 2]) == 0 then
    redis.call('HDEL', key, ARGV[i + 1])
  end
end
return 1
