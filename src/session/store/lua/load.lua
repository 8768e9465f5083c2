-- Returns the session's fields and slides its lifetime, or nil if it does not exist.
-- KEYS[1] session key, ARGV[1] ttl seconds.
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('HGETALL', KEYS[1])
