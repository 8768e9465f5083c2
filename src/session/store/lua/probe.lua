-- Readiness: checks, without running them, that this connection's ACL user may run every
-- command the other scripts and the store's transactions (and the pool's PING, and the
-- SCRIPT LOAD after a NOSCRIPT) run on a key under the prefix, and answers the first refused
-- one's name, or nil. DUMP and RESTORE are left out on purpose: they only make a first visit
-- cheaper, and the store creates sessions without them when they are refused (template.rs).
-- Redis before 7.0 has no acl_check_cmd; there only EVALSHA itself is checked.
-- KEYS[1] the shared-secret key: a key under the session prefix, like every session's.
if not redis.acl_check_cmd then return false end
local k = KEYS[1]
local needs = {
  {'PING'}, {'SCRIPT', 'LOAD', 'return 1'}, {'EXPIRE', k, '1'}, {'EXISTS', k},
  {'HINCRBY', k, 'f', '1'}, {'HSET', k, 'f', 'v'}, {'HDEL', k, 'f'}, {'HGETALL', k},
  {'DEL', k}, {'SET', k, 'v', 'NX'}, {'GET', k}, {'MULTI'}, {'EXEC'},
}
for _, c in ipairs(needs) do
  if not redis.acl_check_cmd(unpack(c)) then return c[1] end
end
return false
