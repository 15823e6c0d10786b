-- The last step of erasing one contact: every key under its hash tag goes, except the
-- owed record of its `contact.erased` (see `RedisStore::erase`), which outlives it.
-- KEYS[1] the contact's owed hash   KEYS[2..] the contact's other keys
-- ARGV[1] the owed field kept ('' keeps nothing)
local kept = ARGV[1] ~= '' and redis.call('HGET', KEYS[1], ARGV[1])
for i = 1, #KEYS do
  redis.call('DEL', KEYS[i])
end
if kept then
  redis.call('HSET', KEYS[1], ARGV[1], kept)
end
return 1
