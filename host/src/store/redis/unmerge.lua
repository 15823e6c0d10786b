-- Mark a merge undone and take its handles back from the survivor (see
-- `RedisStore::unmerge`); compare-and-set on the record, so two undos cannot both win.
-- KEYS[1] survivor contact hash   KEYS[2] survivor merges list
-- ARGV: 1 index of the record  2 the record as read  3 the undone record  4 moved handles
--       5 survivor key prefix  6 owed key  7 now (µs)
--       8 owed record tail '<undone merge JSON>\31<payload>' (the contact.unmerged it owes)
-- Returns 1 when done, 0 when the record changed meanwhile.
if redis.call('LINDEX', KEYS[2], tonumber(ARGV[1])) ~= ARGV[2] then
  return 0
end
redis.call('LSET', KEYS[2], tonumber(ARGV[1]), ARGV[3])
update_handles(KEYS[1], '[]', ARGV[4])
-- The handles leave the survivor: its events carrying them must be resolved again.
for _, handle in ipairs(cjson.decode(ARGV[4])) do
  redis.call('HDEL', KEYS[1], 'v:' .. handle.kind .. ':' .. handle.value)
end
owe(ARGV[5], ARGV[6], ARGV[7], '', '0', '', ARGV[8])
return 1
