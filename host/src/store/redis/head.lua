-- The contact as stored, for the context rules to decide on (see `RedisStore::stored`).
-- KEYS[1] contact hash og:{ct}:c
-- ARGV  1 contact prefix og:{ct}:   2 contact id
-- Returns `head` (common.lua).
return head(ARGV[1], ARGV[2])
