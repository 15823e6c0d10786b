-- Create a contact if missing and update its handles (see `RedisStore::link_sender`,
-- `RedisStore::unmerge`).
-- KEYS[1] contact hash og:{ct}:c
-- ARGV: 1 contact id  2 created_at (µs)  3 name or ''  4 handles to add (JSON array)
--       5 handles to remove (JSON array) or ''
redis.call('HSETNX', KEYS[1], 'id', ARGV[1])
redis.call('HSETNX', KEYS[1], 'created_at', ARGV[2])
if ARGV[3] ~= '' then
  redis.call('HSET', KEYS[1], 'name', ARGV[3])
end
update_handles(KEYS[1], ARGV[4], ARGV[5])
return 1
