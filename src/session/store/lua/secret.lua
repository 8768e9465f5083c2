-- SET NX makes the first instance's secret everyone's; every caller gets the stored one back.
-- KEYS[1] secret key, ARGV[1] this instance's candidate.
redis.call('SET', KEYS[1], ARGV[1], 'NX')
return redis.call('GET', KEYS[1])
