-- Remove a contact from an open-conversation shard only if its score did not move past
-- the sweep's cutoff meanwhile (a new message re-adds it with a later score).
-- KEYS[1] og:open:{<shard>}   ARGV: 1 contact id  2 cutoff (ms)
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if score and tonumber(score) <= tonumber(ARGV[2]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 1
end
return 0
