-- The counter request's hot path: an increment on an existing session that slides its
-- lifetime, and nothing else. apply.lua does the same among much more, and parsing its
-- general arguments cost Redis about 1.5 µs per call (README, Performance).
-- KEYS[1] session key, ARGV[1] ttl seconds, ARGV[2] counter field, ARGV[3] step.
-- Returns the counter's new value, or nil if the session is gone (EXPIRE doubles as the
-- existence check, so a gone session is never revived).
if redis.call('EXPIRE', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('HINCRBY', KEYS[1], ARGV[2], ARGV[3])
