-- Apply a change the context rules decided on a contact or one of its conversations (see
-- `RedisStore::change`): a business message, the close of an idle conversation, a merge,
-- an unmerge, a sender's details. Like
-- apply.lua it decides nothing: it checks the facts the decision read (guards), then
-- writes, appends and keeps what the change owes, atomically in the contact's slot.
-- KEYS[1] contact hash og:{ct}:c
-- ARGV  1 contact prefix og:{ct}:   2 the conversation (target 'v'), or '' for none
--       3 history entry "<time µs> <JSON>" or ''   4 history cap   5 history depth
--       6 timeline entries (JSON, \30-joined) or ''   7 timeline cap
--       8 owed field or ''   9 the owed record   10 message retention (µs) or ''
--      11 now (µs)   12 the position of the conversation's last message the caller
--         holds (0: none; recent.rs)
--      13 G, the number of guards; then G guards and then the writes, 4 arguments each
--         (targets 'c' the contact, 'v' the conversation, 'm' the contact's merges list;
--         see `read_ops` in common.lua).
-- Returns {'stale'} with nothing written when a guard fails, else `describe` of the
-- contact and the conversation as stored after the change ({'ok'} without one), its
-- history those of the last `depth` messages after ARGV[12] but the change's own.
local prefix = ARGV[1]
local keys = { c = KEYS[1], v = prefix .. 'cv:' .. ARGV[2], m = prefix .. 'merges' }
local guards = tonumber(ARGV[13])
local found = read_ops(keys, 14, guards, {})
if not found or not guards_hold(keys, found, 14, guards) then return { 'stale' } end
write_ops(keys, found, 14 + 4 * guards)
if ARGV[8] ~= '' then redis.call('HSET', prefix .. 'owed', ARGV[8], ARGV[9]) end
if ARGV[2] == '' then return { 'ok' } end
local history_key = prefix .. 'h:' .. ARGV[2]
local timeline_key = prefix .. 'tl:' .. ARGV[2]
push_history(history_key, ARGV[3], tonumber(ARGV[4]))
push_timeline(keys.v, timeline_key, ARGV[6], tonumber(ARGV[7]))
if ARGV[10] ~= '' then
  retain(keys.v, history_key, timeline_key, tonumber(ARGV[11]) - tonumber(ARGV[10]),
    tonumber(ARGV[10]))
end
return describe(KEYS[1], keys.v, ARGV[2], history_key,
  math.min(tonumber(ARGV[5]), tonumber(ARGV[4])), '0', '', tonumber(ARGV[12]), ARGV[3] ~= '')
