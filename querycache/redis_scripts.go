package querycache

import "github.com/redis/go-redis/v9"

// Lua scripts of the Redis store. Data model (see redis.go for the reasoning):
//
//	meta    HASH  e: generation (16 hex digits), w: watermark applied to this Redis
//	              (16 hex digits), n: number of tag buckets
//	bucket  two HASHes per bucket, "current" (…:c) and "old" (…:o) generations of
//	        tag -> LSN of last invalidation (16 hex digits). Fields: _e generation
//	        the bucket belongs to (both), _f floor (current), _m highest LSN in the
//	        hash (both). No TTL.
//	entry   HASH  v: encoded Result, s: stamp (16 hex digits), e: generation,
//	              t: tag list "<bucket>,<len>:<tag>" repeated. TTL: the entry's.
//
// LSNs are fixed-width lower-case hex so Lua compares them exactly as strings (Lua
// numbers are doubles and would lose LSN bits).
//
// A tag's last invalidation is: its field in current, else its field in old, else
// current's floor. A bucket whose hashes are missing or of another generation has
// lost what it knew ("lost"): entries depending on it are invalid, and the store
// starts a new generation.

// luaParseTags parses an entry's tag list into {bucket, tag, bucket, tag, ...}, or
// returns nil when it is malformed or names a bucket >= n.
const luaParseTags = `
local function parse_tags(t, n)
  if not t then return nil end
  local out = {}
  local pos, len = 1, #t
  while pos <= len do
    local comma = string.find(t, ',', pos, true)
    if not comma then return nil end
    local colon = string.find(t, ':', comma + 1, true)
    if not colon then return nil end
    local b = string.sub(t, pos, comma - 1)
    local bn = tonumber(b)
    local l = tonumber(string.sub(t, comma + 1, colon - 1))
    if not bn or not l or bn < 0 or bn >= n or l < 0 or colon + l > len then return nil end
    out[#out + 1] = b
    out[#out + 1] = string.sub(t, colon + 1, colon + l)
    pos = colon + l + 1
  end
  return out
end
`

// luaTagLSN returns the LSN of a tag's last invalidation in bucket b of generation
// e, or false when the bucket is lost. pre and post frame the bucket number in the
// key name (they differ between layouts).
const luaTagLSN = `
local function tag_lsn(pre, post, b, tag, e)
  local ck = pre .. b .. post .. ':c'
  local c = redis.call('HMGET', ck, '_e', '_f', tag)
  if c[1] ~= e then return false end
  if c[3] then return c[3] end
  local o = redis.call('HMGET', pre .. b .. post .. ':o', '_e', tag)
  if o[1] ~= e then return false end
  return o[2] or c[2]
end
`

// luaWriteEntry writes an entry's four fields and its TTL. The HSET comes first:
// Redis checks maxmemory only until a script has written something, so a script
// starting with a DEL would fill a full noeviction Redis regardless. A key of
// another type (a foreign value) is replaced. Returns nil, or the error reply.
const luaWriteEntry = `
local function write_entry(key, v, s, e, t, ttl)
  local r = redis.pcall('HSET', key, 'v', v, 's', s, 'e', e, 't', t)
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'WRONGTYPE', 1, true) then return r end
    redis.call('DEL', key)
    redis.call('HSET', key, 'v', v, 's', s, 'e', e, 't', t)
  end
  redis.call('PEXPIRE', key, ttl)
  return nil
end
`

// getOneSlot answers a read in one round trip when the entry, meta and buckets share
// a slot.
//
//	KEYS[1] entry, KEYS[2] meta
//	ARGV[1] bucket key prefix, ARGV[2] bucket key suffix, ARGV[3] bucket count,
//	ARGV[4] the reader's watermark
//
// Replies {status, generation?, value, stamp, tags, pttl}; status is hit, miss,
// noepoch, behind, invalid, lost or corrupt (not a hash, or a bad tag list).
// Invalid, lost and corrupt entries are deleted.
var getOneSlot = redis.NewScript(luaParseTags + luaTagLSN + `
local m = redis.call('HMGET', KEYS[2], 'e', 'w', 'n')
local e = m[1]
if not e or m[3] ~= ARGV[3] then return {'noepoch'} end
if not m[2] or m[2] < ARGV[4] then return {'behind', e} end
local v = redis.pcall('HMGET', KEYS[1], 'v', 's', 'e', 't')
if v.err then
  redis.call('DEL', KEYS[1])
  return {'corrupt', e}
end
if not v[1] then return {'miss', e} end
if v[3] ~= e or not v[2] then
  redis.call('DEL', KEYS[1])
  return {'invalid', e}
end
local tags = parse_tags(v[4], tonumber(ARGV[3]))
if not tags then
  redis.call('DEL', KEYS[1])
  return {'corrupt', e}
end
for i = 1, #tags, 2 do
  local lsn = tag_lsn(ARGV[1], ARGV[2], tags[i], tags[i + 1], e)
  if not lsn then
    redis.call('DEL', KEYS[1])
    return {'lost', e}
  end
  if lsn > v[2] then
    redis.call('DEL', KEYS[1])
    return {'invalid', e}
  end
end
return {'hit', e, v[1], v[2], v[4], redis.call('PTTL', KEYS[1])}
`)

// setOneSlot stores an entry in one round trip when it is valid.
//
//	KEYS[1] entry, KEYS[2] meta
//	ARGV[1] bucket key prefix, ARGV[2] bucket key suffix, ARGV[3] bucket count,
//	ARGV[4] the stamp's generation, ARGV[5] stamp, ARGV[6] TTL in ms, ARGV[7] value,
//	ARGV[8] tag list
//
// Replies {status, generation?}; status is ok, noepoch, epoch (another generation),
// stale, lost or badtags.
var setOneSlot = redis.NewScript(luaParseTags + luaTagLSN + luaWriteEntry + `
local m = redis.call('HMGET', KEYS[2], 'e', 'n')
local e = m[1]
if not e or m[2] ~= ARGV[3] then return {'noepoch'} end
if e ~= ARGV[4] then return {'epoch', e} end
local tags = parse_tags(ARGV[8], tonumber(ARGV[3]))
if not tags then return {'badtags', e} end
for i = 1, #tags, 2 do
  local lsn = tag_lsn(ARGV[1], ARGV[2], tags[i], tags[i + 1], e)
  if not lsn then return {'lost', e} end
  if lsn > ARGV[5] then return {'stale', e} end
end
local w = write_entry(KEYS[1], ARGV[7], ARGV[5], e, ARGV[8], ARGV[6])
if w then return w end
return {'ok', e}
`)

// bucketLookup returns the highest last-invalidation LSN of some tags of one bucket,
// atomically over both of its hashes (a rotation between two reads could otherwise
// hide a tag). Used where the entry and the bucket do not share a slot.
//
//	KEYS[1] current, KEYS[2] old; ARGV[1] generation, ARGV[2..] tags
//
// Replies the LSN, or "lost".
var bucketLookup = redis.NewScript(`
local c = redis.call('HMGET', KEYS[1], '_e', '_f')
local oe = redis.call('HGET', KEYS[2], '_e')
if c[1] ~= ARGV[1] or oe ~= ARGV[1] or not c[2] then return 'lost' end
local max = '0000000000000000'
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if not v then v = redis.call('HGET', KEYS[2], ARGV[i]) or c[2] end
  if v > max then max = v end
end
return max
`)

// setEntry writes an entry whose validity was checked in an earlier round trip.
//
//	KEYS[1] entry; ARGV[1] value, ARGV[2] stamp, ARGV[3] generation, ARGV[4] tag
//	list, ARGV[5] TTL in ms
var setEntry = redis.NewScript(luaWriteEntry + `
local w = write_entry(KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
if w then return w end
return 'ok'
`)

// bucketApply records that tags of one bucket were invalidated at an LSN, and
// rotates the bucket's generations when the current one is full: the old hash is
// forgotten and the floor rises to the highest LSN it held.
//
//	KEYS[1] current, KEYS[2] old
//	ARGV[1] generation, ARGV[2] LSN, ARGV[3] most tags per hash, ARGV[4..] tags
//
// Replies "ok" or "lost".
var bucketApply = redis.NewScript(`
local c = redis.call('HMGET', KEYS[1], '_e', '_f', '_m')
local o = redis.call('HMGET', KEYS[2], '_e', '_m')
if c[1] ~= ARGV[1] or o[1] ~= ARGV[1] or not c[2] or not c[3] or not o[2] then return 'lost' end
local lsn = ARGV[2]
for i = 4, #ARGV do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if not cur or cur < lsn then redis.call('HSET', KEYS[1], ARGV[i], lsn) end
end
if c[3] < lsn then redis.call('HSET', KEYS[1], '_m', lsn) end
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[3]) + 3 then
  local floor = c[2]
  if o[2] > floor then floor = o[2] end
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('HSET', KEYS[1], '_e', ARGV[1], '_f', floor, '_m', floor)
end
return 'ok'
`)

// bucketReset empties a bucket into generation ARGV[1].
//
//	KEYS[1] current, KEYS[2] old; ARGV[1] generation
var bucketReset = redis.NewScript(`
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], '_e', ARGV[1], '_f', '0000000000000000', '_m', '0000000000000000')
redis.call('HSET', KEYS[2], '_e', ARGV[1], '_m', '0000000000000000')
return 'ok'
`)

// advanceWatermark raises the watermark of this Redis (or sets it, when ARGV[2] is
// "1": a new replication stream after a flush). ARGV[3] is the watermark this
// process wrote last: finding a lower one means Redis lost writes (a failover to
// a replica that had not received them, a restore), tag invalidations included, and
// the reply is "lost" without writing.
//
//	KEYS[1] meta; ARGV[1] watermark, ARGV[2] force, ARGV[3] last written
var advanceWatermark = redis.NewScript(`
local w = redis.call('HGET', KEYS[1], 'w')
if ARGV[2] ~= '1' and (w or '0000000000000000') < ARGV[3] then return 'lost' end
if ARGV[2] == '1' or not w or w < ARGV[1] then redis.call('HSET', KEYS[1], 'w', ARGV[1]) end
return 'ok'
`)

// releaseLock deletes the repair lock if it still holds our token.
//
//	KEYS[1] lock; ARGV[1] token
var releaseLock = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)
