-- Compare-and-set one channel's activation, bump the registry revision, announce it.
-- KEYS[1] og:{plugins}:active (hash channel -> activation JSON)
-- KEYS[2] og:{plugins}:revision (counter)
-- ARGV[1] channel, ARGV[2] expected digest ('' = no record yet), ARGV[3] activation JSON,
-- ARGV[4] pub/sub channel
local current = redis.call('HGET', KEYS[1], ARGV[1])
local digest = ''
if current then
  digest = cjson.decode(current)['digest'] or ''
end
if digest ~= ARGV[2] then
  return {'conflict', digest}
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local revision = redis.call('INCR', KEYS[2])
redis.call('PUBLISH', ARGV[4], revision)
return {'ok', tostring(revision)}
