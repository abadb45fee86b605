/**
 * The Redis layer's Lua scripts, as named constants. The transport registers each with ioredis
 * `defineCommand`, so every call is one EVALSHA (EVAL the first time on a connection).
 *
 * Every script gets KP, the key base (`<prefix>:`), as ARGV[1]. Key names come from
 * redis-keys.ts (LUA_KEYS builds the same names for group members found inside a script).
 *
 * How a message travels (the layer's header comment tells why):
 *  - A channel has a holder when a layer instance is receiving on it: for a process-specific
 *    channel, the instance named in it; for a normal channel, the one in the state hash's `o`.
 *  - A send gives the message the channel's next sequence number, then PUBLISHes it to the
 *    holder's wake topic when the holder is live and the channel's queue is empty. Otherwise, or
 *    when PUBLISH reached nobody, it stores it in the queue (capacity permitting) and, if there is
 *    a holder, publishes a one-line notice so it drains the queue.
 *  - Wake topic frames: `M<k>\n(<channel>\n<seq>\n)*k<expiresAt>\n<entry>` a message for k
 *    channels; `N<channel>` the channel's queue holds messages; `L<channel>` the same, stored
 *    because a PUBLISH to the holder counted none of its subscribers on the node that ran the
 *    send (on a cluster the bus still delivers `L` to its subscribers elsewhere; for a normal
 *    channel the holder was let go: claim again); `C<channel>` the channel's holder
 *    let go (for instances waiting to hold it); `F<token>` a fence (everything published to this
 *    topic before the script that sent it has arrived).
 *  - A queue member is `<seq>\n<expiresAt>\n<entry>`, scored by seq. Sequence numbers are the
 *    server's clock in microseconds, kept increasing per channel, so they order messages even
 *    across a Redis restart that lost the counter.
 */
import { LUA_KEYS } from './redis-keys.js';

const PRELUDE = `
local KP = ARGV[1]
${LUA_KEYS}
local function fmt(n) return string.format('%d', n) end

local function expire_at_least(key, ttl)
  if ttl < 1 then ttl = 1 end
  local current = redis.call('PTTL', key)
  if current >= 0 and current >= ttl then return end
  redis.call('PEXPIRE', key, fmt(ttl))
end

local function expires_of(member)
  return tonumber(string.match(member, '^%d+\\n(%d+)\\n'))
end

-- Drops expired members from the head of a queue; true when an unexpired one remains.
local function trim_expired(queue, now)
  while true do
    local head = redis.call('ZRANGE', queue, 0, 0)[1]
    if not head then return false end
    local exp = expires_of(head)
    if exp and exp > now then return true end
    redis.call('ZREM', queue, head)
  end
end

local function store(queue, seq, exp, entry, now, cap)
  trim_expired(queue, now)
  if redis.call('ZCARD', queue) >= cap then return false end
  redis.call('ZADD', queue, fmt(seq), fmt(seq) .. '\\n' .. fmt(exp) .. '\\n' .. entry)
  expire_at_least(queue, exp - now)
  return true
end

local function drain(queue, now)
  local all = redis.call('ZRANGE', queue, 0, -1)
  if #all > 0 then redis.call('DEL', queue) end
  local out = {}
  for _, m in ipairs(all) do
    local exp = expires_of(m)
    if exp and exp > now then out[#out + 1] = m end
  end
  return out
end

-- Lets go of a normal channel: drops its holder (telling every waiter) and lets the state expire.
-- w: the waiters field when the caller has read it (nil: read it here); keep: whether the state
-- holds a sequence number (without one the hash is empty once the holder is gone).
local function drop_owner(state, ch, state_ttl, w, keep)
  if w == nil then w = redis.call('HGET', state, 'w') end
  if w then
    for id in string.gmatch(w, '[^ ]+') do redis.call('PUBLISH', wake_topic(id), 'C' .. ch) end
  end
  redis.call('HDEL', state, 'o', 'n', 'w')
  if keep then redis.call('PEXPIRE', state, state_ttl) end
end

local function target(ch, cap)
  local nl, loc, id = split_channel(ch)
  return { ch = ch, state = state_key(nl), queue = queue_key(nl, loc), cap = cap, implicit = id }
end

-- Sends one entry to every target; returns how many were full (and skipped).
-- The hot path (a live holder, an empty queue) runs TIME, HMGET, ZRANGE, PUBLISH and HSET: the
-- state is read once and, for a normal channel, written once (its sequence number, and the count
-- of messages published to the holder). Process-specific channels of one instance share one
-- state hash, so theirs is written at once, before the next target reads it.
local function deliver_all(targets, exp, entry, now, state_ttl)
  local full = 0
  -- A PUBLISH to the holder counted nobody on this node, so the message was stored. The holder
  -- may be gone (then a normal channel is let go), or, on a cluster, alive but without a
  -- subscriber on this node (a failover it has not seen yet). The cluster bus carries every
  -- PUBLISH to every node, so an 'L' notice reaches such a holder through its subscribers on
  -- the other nodes: it drains what was stored, claims the channel again and subscribes here.
  local function lost_here(owner, t)
    if not t.implicit then drop_owner(t.state, t.ch, state_ttl, nil, true) end
    redis.call('PUBLISH', wake_topic(owner), 'L' .. t.ch)
  end
  -- Writes a normal channel's sequence number when it was left for later.
  local function write_seq(t)
    if t.unwritten then
      t.unwritten = false
      redis.call('HSET', t.state, 's', fmt(t.seq))
    end
  end
  -- Sequence numbers: the server clock in microseconds, kept increasing per channel.
  local time = redis.call('TIME')
  local clock = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local by_owner, owners = {}, {}
  for _, t in ipairs(targets) do
    local st = redis.call('HMGET', t.state, 's', 'o', 'n')
    local seq = clock
    local last = tonumber(st[1] or '0')
    if seq <= last then seq = last + 1 end
    t.seq = seq
    local owner = t.implicit
    if owner then
      redis.call('HSET', t.state, 's', fmt(seq))
      redis.call('PEXPIRE', t.state, state_ttl)
    else
      owner = st[2]
      if owner then
        -- Held: the hash persists; written below, once.
        t.unwritten = true
        t.n = tonumber(st[3] or '0')
      else
        redis.call('HSET', t.state, 's', fmt(seq))
        redis.call('PEXPIRE', t.state, state_ttl)
      end
    end
    local live = owner and string.sub(owner, 1, 1) ~= '~'
    if live and not trim_expired(t.queue, now) then
      local g = by_owner[owner]
      if not g then g = {}; by_owner[owner] = g; owners[#owners + 1] = owner end
      g[#g + 1] = t
    else
      write_seq(t)
      if store(t.queue, t.seq, exp, entry, now, t.cap) then
        if live and redis.call('PUBLISH', wake_topic(owner), 'N' .. t.ch) == 0 then
          lost_here(owner, t)
        end
      else
        full = full + 1
      end
    end
  end
  for _, owner in ipairs(owners) do
    local g = by_owner[owner]
    local frame = { 'M', tostring(#g), '\\n' }
    for _, t in ipairs(g) do
      frame[#frame + 1] = t.ch .. '\\n' .. fmt(t.seq) .. '\\n'
    end
    frame[#frame + 1] = fmt(exp) .. '\\n'
    frame[#frame + 1] = entry
    if redis.call('PUBLISH', wake_topic(owner), table.concat(frame)) > 0 then
      for _, t in ipairs(g) do
        if t.unwritten then
          t.unwritten = false
          redis.call('HSET', t.state, 's', fmt(t.seq), 'n', fmt(t.n + 1))
        end
      end
    else
      for _, t in ipairs(g) do
        write_seq(t)
        if not store(t.queue, t.seq, exp, entry, now, t.cap) then full = full + 1 end
        lost_here(owner, t)
      end
    end
  end
  return full
end

-- Puts members ARGV[first..] back on a queue (by their own sequence numbers). Returns the
-- highest sequence number put back, or false when none was.
local function requeue(queue, first, now)
  local top, latest = false, 0
  for i = first, #ARGV do
    local m = ARGV[i]
    local seq, exp = string.match(m, '^(%d+)\\n(%d+)\\n')
    exp = tonumber(exp)
    if seq and exp > now then
      redis.call('ZADD', queue, seq, m)
      seq = tonumber(seq)
      if not top or seq > top then top = seq end
      if exp > latest then latest = exp end
    end
  end
  if top then expire_at_least(queue, latest - now) end
  return top
end
`;

/**
 * A roster is a hash: member -> `<seq>\n<since>\n<data>`, and `#` -> the last seq given out
 * (join order). Each script reads it whole once (HGETALL) and works on that copy.
 */
const ROSTER_PRELUDE = `
-- The roster's members as {seq, member, since, data}, the last seq given out, and the index of
-- member in the list (nil when absent).
local function roster_read(key, member)
  local kv = redis.call('HGETALL', key)
  local list, last, at = {}, 0, nil
  for i = 1, #kv, 2 do
    if kv[i] == '#' then
      last = tonumber(kv[i + 1]) or 0
    else
      local seq, since, data = string.match(kv[i + 1], '^(%d+)\\n(%d+)\\n(.*)$')
      list[#list + 1] = { tonumber(seq), kv[i], since, data }
      if kv[i] == member then at = #list end
    end
  end
  return list, last, at
end
local function fmt_entry(e)
  return string.format('%d', e[1]) .. '\\n' .. e[3] .. '\\n' .. e[4]
end
-- member, since, data, ... oldest first.
local function roster_reply(list)
  table.sort(list, function(a, b) return a[1] < b[1] end)
  local out = {}
  for _, e in ipairs(list) do
    out[#out + 1] = e[2]; out[#out + 1] = e[3]; out[#out + 1] = e[4]
  end
  return out
end
`;

/**
 * send: KEYS state, queue. ARGV KP, now, expiresAt, entry, stateTtl, channel, capacity,
 * holder id for a process-specific channel ('' for a normal one). Returns 1 when full, else 0.
 */
const SEND = `${PRELUDE}
local implicit = ARGV[8]
if implicit == '' then implicit = false end
return deliver_all({ { ch = ARGV[6], state = KEYS[1], queue = KEYS[2], cap = tonumber(ARGV[7]), implicit = implicit } },
  tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[2]), ARGV[5])
`;

/**
 * groupSend (one host, or one of several): KEYS group, groupCapacities. ARGV KP, now, cutoff,
 * default capacity, expiresAt, entry, stateTtl, this host's index, host count. Drops members
 * added before cutoff, sends to the members kept on this host, and returns
 * {full count, channel, capacity, ...} with the members that live on other hosts.
 */
const GROUP_SEND = `${PRELUDE}
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
if #members == 0 then return { 0 } end
local caps = {}
if redis.call('EXISTS', KEYS[2]) == 1 then
  local kv = redis.call('HGETALL', KEYS[2])
  for i = 1, #kv, 2 do caps[kv[i]] = tonumber(kv[i + 1]) end
end
local default, host, count = tonumber(ARGV[4]), tonumber(ARGV[8]), tonumber(ARGV[9])
local targets, result = {}, { 0 }
for _, ch in ipairs(members) do
  local cap = caps[ch] or default
  if host_of((split_channel(ch)), count) == host then
    targets[#targets + 1] = target(ch, cap)
  else
    result[#result + 1] = ch
    result[#result + 1] = tostring(cap)
  end
end
result[1] = deliver_all(targets, tonumber(ARGV[5]), ARGV[6], tonumber(ARGV[2]), ARGV[7])
return result
`;

/** deliverMany (no keys; standalone hosts only): ARGV KP, now, expiresAt, entry, stateTtl, then channel, capacity pairs. */
const DELIVER_MANY = `${PRELUDE}
local targets = {}
for i = 6, #ARGV, 2 do targets[#targets + 1] = target(ARGV[i], tonumber(ARGV[i + 1])) end
return deliver_all(targets, tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[2]), ARGV[5])
`;

/** groupMembers (Redis Cluster): KEYS group, groupCapacities. ARGV KP, cutoff. Returns channel, capacity ('' = default) pairs. */
const GROUP_MEMBERS = `
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[2])
local members = redis.call('ZRANGE', KEYS[1], 0, -1)
local out = {}
for _, ch in ipairs(members) do
  out[#out + 1] = ch
  out[#out + 1] = redis.call('HGET', KEYS[2], ch) or ''
end
return out
`;

/** groupAdd: KEYS group, groupCapacities. ARGV KP, score (ms), ttl (ms), channel, capacity ('' = default). */
const GROUP_ADD = `${PRELUDE}
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
expire_at_least(KEYS[1], tonumber(ARGV[3]))
if ARGV[5] ~= '' then
  redis.call('HSET', KEYS[2], ARGV[4], ARGV[5])
  expire_at_least(KEYS[2], tonumber(ARGV[3]))
else
  redis.call('HDEL', KEYS[2], ARGV[4])
end
return 1
`;

/** groupDiscard: KEYS group, groupCapacities. ARGV KP, channel. */
const GROUP_DISCARD = `
redis.call('ZREM', KEYS[1], ARGV[2])
redis.call('HDEL', KEYS[2], ARGV[2])
return 1
`;

/**
 * claim (normal channels): KEYS state, queue. ARGV KP, layer id, fence token, now, '1' when a
 * fresh channel may skip the fence ('' on a cluster).
 * Becomes the holder unless a live instance holds the channel (then joins its waiters and
 * returns {0}); drains the queue and publishes a fence to this instance: {1, members}.
 * A fresh channel (nobody holds it and it has no sequence number: no send ever went through
 * Redis to it, or its state expired with everything sent) has an empty queue and nothing on its
 * way to anyone: it is only taken, {1, {}, 1}, without a drain, a fence or a PERSIST.
 */
const CLAIM = `${PRELUDE}
local me = ARGV[2]
local st = redis.call('HMGET', KEYS[1], 'o', 's')
local o = st[1]
if o and o ~= me and o ~= '~' .. me then
  local id = o
  if string.sub(o, 1, 1) == '~' then id = string.sub(o, 2) end
  if redis.call('PUBSUB', 'NUMSUB', wake_topic(id))[2] > 0 then
    local w = redis.call('HGET', KEYS[1], 'w') or ''
    if not string.find(' ' .. w .. ' ', ' ' .. me .. ' ', 1, true) then
      if w == '' then w = me else w = w .. ' ' .. me end
      redis.call('HSET', KEYS[1], 'w', w)
    end
    return { 0 }
  end
end
redis.call('HSET', KEYS[1], 'o', me, 'n', '0')
if not o and not st[2] and ARGV[5] == '1' then return { 1, {}, 1 } end
redis.call('PERSIST', KEYS[1])
local items = drain(KEYS[2], tonumber(ARGV[4]))
redis.call('PUBLISH', wake_topic(me), 'F' .. ARGV[3])
return { 1, items }
`;

/** drain (process-specific channels): KEYS queue. ARGV KP, layer id, fence token, now. Returns {1, members}. */
const DRAIN = `${PRELUDE}
local items = drain(KEYS[1], tonumber(ARGV[4]))
redis.call('PUBLISH', wake_topic(ARGV[2]), 'F' .. ARGV[3])
return { 1, items }
`;

/**
 * release: KEYS state, queue. ARGV KP, layer id, messages received since the claim (-1: do not
 * check), now, stateTtl, channel, then queue members to put back.
 * When this instance holds the channel and fewer messages reached it than were published to it,
 * it parks the channel (sends store, nobody else may take it) and returns {0, published}: the
 * layer releases again once the rest arrive. Otherwise it puts the members back, lets go of the
 * channel (waking instances waiting for it) and returns {1}.
 */
const RELEASE = `${PRELUDE}
local me, m, now = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local st = redis.call('HMGET', KEYS[1], 'o', 'n', 'w', 's')
local o = st[1]
local mine = o and (o == me or o == '~' .. me)
if mine and m >= 0 then
  local n = tonumber(st[2] or '0')
  if m < n then
    redis.call('HSET', KEYS[1], 'o', '~' .. me)
    return { 0, n }
  end
end
local top = requeue(KEYS[2], 7, now)
local has_seq = st[4]
if top and not has_seq then
  -- Redis lost the state (a restart) while we held these: give the channel a sequence number
  -- again, so that a claim drains them (a channel without one is fresh) and later sends follow.
  redis.call('HSET', KEYS[1], 's', string.format('%d', top))
  has_seq = true
  if not o then redis.call('PEXPIRE', KEYS[1], ARGV[5]) end
end
if mine then
  drop_owner(KEYS[1], ARGV[6], ARGV[5], st[3], has_seq)
elseif o and top and string.sub(o, 1, 1) ~= '~' then
  redis.call('PUBLISH', wake_topic(o), 'N' .. ARGV[6])
end
return { 1 }
`;

/**
 * rosterRestore: KEYS roster. ARGV KP, member, data, since, ttl (ms). Puts a member back after a
 * Redis restart lost it, keeping its join time; does nothing when the member is there already.
 */
const ROSTER_RESTORE = `
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return 0 end
local seq = redis.call('HINCRBY', KEYS[1], '#', 1)
redis.call('HSET', KEYS[1], ARGV[2], seq .. '\\n' .. ARGV[4] .. '\\n' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
`;

/** rosterJoin: KEYS roster. ARGV KP, member, data, now, limit, ttl (ms). Returns {joined 0/1, member, since, data, ...}. */
const ROSTER_JOIN = `${ROSTER_PRELUDE}
local list, last, at = roster_read(KEYS[1], ARGV[2])
if at then
  local e = list[at]
  e[4] = ARGV[3]
  redis.call('HSET', KEYS[1], ARGV[2], fmt_entry(e))
else
  if #list >= tonumber(ARGV[5]) then return { 0, roster_reply(list) } end
  local e = { last + 1, ARGV[2], ARGV[4], ARGV[3] }
  list[#list + 1] = e
  redis.call('HSET', KEYS[1], '#', string.format('%d', e[1]), ARGV[2], fmt_entry(e))
end
redis.call('PEXPIRE', KEYS[1], ARGV[6])
return { 1, roster_reply(list) }
`;

/** rosterList: KEYS roster. ARGV KP. Returns member, since, data, ... oldest first. */
const ROSTER_LIST = `${ROSTER_PRELUDE}
return roster_reply((roster_read(KEYS[1])))
`;

/** rosterUpdate: KEYS roster. ARGV KP, member, data, has ifData (1/0), ifData, ttl (ms, '' = keep). Returns 1/0. */
const ROSTER_UPDATE = `
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if not cur then return 0 end
local seq, since, data = string.match(cur, '^(%d+)\\n(%d+)\\n(.*)$')
if ARGV[4] == '1' and data ~= ARGV[5] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], seq .. '\\n' .. since .. '\\n' .. ARGV[3])
if ARGV[6] ~= '' then redis.call('PEXPIRE', KEYS[1], ARGV[6]) end
return 1
`;

/** rosterLeave: KEYS roster. ARGV KP, member, has ifData (1/0), ifData. Returns {0} or {1, remaining entries}. */
const ROSTER_LEAVE = `${ROSTER_PRELUDE}
local list, _, at = roster_read(KEYS[1], ARGV[2])
if not at then return { 0 } end
if ARGV[3] == '1' and list[at][4] ~= ARGV[4] then return { 0 } end
table.remove(list, at)
if #list == 0 then redis.call('DEL', KEYS[1]) else redis.call('HDEL', KEYS[1], ARGV[2]) end
return { 1, roster_reply(list) }
`;

/** rosterDelete: KEYS roster. ARGV KP. Returns the entries it held. */
const ROSTER_DELETE = `${ROSTER_PRELUDE}
local list = roster_read(KEYS[1])
redis.call('DEL', KEYS[1])
return roster_reply(list)
`;

/** Every script by the name the transport registers it under. */
export const SCRIPTS = Object.freeze({
  send: SEND,
  groupSend: GROUP_SEND,
  deliverMany: DELIVER_MANY,
  groupMembers: GROUP_MEMBERS,
  groupAdd: GROUP_ADD,
  groupDiscard: GROUP_DISCARD,
  claim: CLAIM,
  drain: DRAIN,
  release: RELEASE,
  rosterJoin: ROSTER_JOIN,
  rosterRestore: ROSTER_RESTORE,
  rosterList: ROSTER_LIST,
  rosterUpdate: ROSTER_UPDATE,
  rosterLeave: ROSTER_LEAVE,
  rosterDelete: ROSTER_DELETE,
});

/** A script's name. */
export type ScriptName = keyof typeof SCRIPTS;
