-- Applies a session update in one atomic step on one key.
--
-- The general case; touch.lua and the creation transaction (redis/mod.rs) are cheaper for the
-- two common ones.
--
-- KEYS[1] session key. ARGV: ttl seconds, "x" (must exist) or "n" (new, under a fresh
-- random id: not checked, see RedisStore::create), counter field or "", counter step, n = number of
-- fields to set, n field/value pairs, then fields to remove.
--
-- Returns {1, counter?}, or {0} if a must-exist session is gone.
local key = KEYS[1]
-- EXPIRE doubles as the existence check: it answers 0 for a missing key.
if ARGV[2] == 'x' and redis.call('EXPIRE', key, ARGV[1]) == 0 then return {0} end
local n = tonumber(ARGV[5])
local field = ARGV[3]
-- Redis does not undo a failing script's earlier writes, so nothing may fail after the
-- first write. A counter that is also being set is checked here; otherwise HINCRBY runs
-- before any write (on a new key it cannot fail), unless the counter is being removed.
local late = false
if field ~= '' then
  for i = 6, 5 + 2 * n, 2 do
    if ARGV[i] == field then
      if not string.match(ARGV[i + 1], '^%-?%d+$') then
        return redis.error_reply('ERR session counter ' .. field .. ' is not an integer')
      end
      late = true
    end
  end
  for i = 6 + 2 * n, #ARGV do
    if ARGV[i] == field then late = true end
  end
end
local counter = false
if field ~= '' and not late then counter = redis.call('HINCRBY', key, field, ARGV[4]) end
if n > 0 then redis.call('HSET', key, unpack(ARGV, 6, 5 + 2 * n)) end
if #ARGV >= 6 + 2 * n then redis.call('HDEL', key, unpack(ARGV, 6 + 2 * n, #ARGV)) end
if late then counter = redis.call('HINCRBY', key, field, ARGV[4]) end
if ARGV[2] == 'n' then redis.call('EXPIRE', key, ARGV[1]) end
if counter then return {1, counter} end
return {1}
