-- Compare-and-set of one index key (handle → contact): point it at ARGV[2] only while it
-- points at ARGV[1]; ARGV[2] = '' deletes it. One key, so any slot.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  if ARGV[2] == '' then
    redis.call('DEL', KEYS[1])
  else
    redis.call('SET', KEYS[1], ARGV[2])
  end
  return 1
end
return 0
