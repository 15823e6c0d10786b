-- Keep a conversation's outcome record if it is still at the version read (see
-- `OutcomeStore::commit`), with what the change owes, atomically.
-- KEYS[1] og:{ct}:oc:<conversation>   hash: v (version), r (record JSON)
-- ARGV: 1 key prefix og:{ct}:  2 version read  3 record JSON  4 owed key or ''
--       5 now (µs)  6 conversation id  7 owed record tail ('\31<payload>', see `owe`)
-- Returns 1 when kept, 0 when the record changed since it was read.
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[2]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', version + 1, 'r', ARGV[3])
if ARGV[4] ~= '' then
  owe(ARGV[1], ARGV[4], ARGV[5], ARGV[6], '0', '', ARGV[7])
end
return 1
