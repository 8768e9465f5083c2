-- Creates a session: its fields and its lifetime in one atomic step, so it never exists
-- without a TTL. The key holds a fresh 256-bit random id, so unlike apply.lua's "n" path
-- nothing checks that it is free: a collision is as likely as guessing a session, and the
-- EXISTS cost Redis about 2 µs per new session (README, Performance).
-- KEYS[1] session key, ARGV[1] ttl seconds, then field/value pairs (at least one).
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
