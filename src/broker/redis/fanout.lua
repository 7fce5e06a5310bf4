#!lua name=fanout
--
-- fanout's channel history, as Redis functions. Every node loads this
-- library at start-up (FUNCTION LOAD REPLACE, on every master of a
-- cluster); backends may call fanout_publish themselves (docs/redis.md).
--
-- Each channel `<prefix>:<kind>...` (`fanout:user:42`) has, in its own hash
-- slot (`{fanout:user:42}` unless the channel already carries a hash tag):
--   <base>:m   a hash: `e` the epoch, `o` the top offset (meta, long TTL)
--   <base>:h   a stream of the recent messages, field `d` the body (TTL)
--   <base>:i:<key>   an idempotency record "offset epoch receivers"
-- A message is appended and published in one function call, so nothing is
-- ever delivered live that a resume could not find, and the offset comes
-- from here, not from a node.
--
-- Defaults, filled in by the node that loads the library from its own
-- configuration (sizes in messages, times in milliseconds):
local DEFAULTS = {
  user = { size = {{USER_SIZE}}, ttl = {{USER_TTL}} },
  group = { size = {{GROUP_SIZE}}, ttl = {{GROUP_TTL}} },
  all = { size = {{ALL_SIZE}}, ttl = {{ALL_TTL}} },
  meta_ttl = {{META_TTL}},
  idempotency_ttl = {{IDEMPOTENCY_TTL}},
  sharded = {{SHARDED}},
  max_json_depth = {{MAX_JSON_DEPTH}},
}

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- A new epoch: the server clock in microseconds, base 36, never `previous`.
local function new_epoch(previous)
  local t = redis.call('TIME')
  local n = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local digits = '0123456789abcdefghijklmnopqrstuvwxyz'
  local s = ''
  while n > 0 do
    local d = n % 36
    s = string.sub(digits, d + 1, d + 1) .. s
    n = math.floor(n / 36)
  end
  if s == previous then
    s = s .. 'a'
  end
  return s
end

-- The kind of `<prefix>:<kind>...`: user, group, all, or nil.
local function kind_of(channel)
  local rest = string.match(channel, '^[^:]*:(.*)$')
  if rest == nil then
    return nil
  end
  if string.sub(rest, 1, 5) == 'user:' then
    return 'user'
  elseif string.sub(rest, 1, 6) == 'group:' then
    return 'group'
  elseif rest == 'all' then
    return 'all'
  end
  return nil
end

-- The channel's epoch and top offset, creating the epoch if it has none.
local function meta(keys, meta_ttl)
  local m = keys[2]
  local epoch = redis.call('HGET', m, 'e')
  local top = 0
  if epoch then
    top = tonumber(redis.call('HGET', m, 'o') or '0')
  else
    epoch = new_epoch(nil)
    redis.call('DEL', keys[1])
    redis.call('HSET', m, 'e', epoch, 'o', 0)
  end
  redis.call('PEXPIRE', m, meta_ttl)
  return epoch, top
end

local function number(value, default)
  local n = tonumber(value)
  if n == nil then
    return default
  end
  return n
end

-- Largest body the nodes accept (MAX_BODY in src/broker/wire.rs).
local MAX_BODY = 16 * 1024 * 1024

-- The refusal of a body nesting deeper than `max_depth` allows `data`.
local function too_deep(max_depth)
  return '"data" may nest at most ' .. max_depth .. ' levels deep (the body as a whole, one more)'
end

local function is_name(s)
  return type(s) == 'string' and #s >= 1 and #s <= 128 and string.match(s, '^[%w_%.:@=+/%-]+$') ~= nil
end

-- Decodes a JSON text nesting at most `max_depth` levels: cjson's own
-- limit, set for this call only (other libraries share the Lua state) and
-- counted as json_depth.rs counts. Returns ok, the value or the error, and
-- whether the error was the depth.
local function decode(text, max_depth)
  local set = cjson.decode_max_depth
  local previous = set and set()
  if set then
    set(max_depth)
  end
  local ok, value = pcall(cjson.decode, text)
  if set then
    set(previous)
  end
  local deep = not ok and string.find(tostring(value), 'nested', 1, true) ~= nil
  return ok, value, deep
end

-- What a body lacks: whether to add `id` and `ts`, or nil and why it is
-- refused. A node's own bodies start with both and were checked by the
-- node (`checked`): they skip the JSON decode. Every other body is decoded
-- and checked as the nodes check what they receive, depth included, so
-- that nothing is kept that no node could deliver (a resume would stop
-- there), and every node and every replay shows the same id and timestamp.
local function missing_fields(rest, checked, max_depth)
  if checked and string.match(rest, '^"id":"[^"\\]*","ts":%d+[,}]') then
    return false, false
  end
  local ok, object, deep = decode('{' .. rest, max_depth + 1)
  if deep then
    return nil, nil, too_deep(max_depth)
  end
  if not ok or type(object) ~= 'table' then
    return nil, nil, 'the body must be a JSON object'
  end
  if object['cmd'] ~= nil then
    return nil, nil, 'commands ("cmd") are published with PUBLISH, not kept'
  end
  if object['offset'] ~= nil or object['epoch'] ~= nil then
    return nil, nil, '"offset" and "epoch" are written by fanout_publish'
  end
  local id, ts, event, from = object['id'], object['ts'], object['event'], object['from']
  if id ~= nil and (type(id) ~= 'string' or #id == 0 or #id > 128) then
    return nil, nil, '"id" must be a string of 1 to 128 bytes'
  end
  if ts ~= nil and (type(ts) ~= 'number' or ts < 0 or ts ~= math.floor(ts) or ts > 9007199254740991) then
    return nil, nil, '"ts" must be a non-negative integer'
  end
  if event ~= nil and (type(event) ~= 'string' or #event == 0 or #event > 128) then
    return nil, nil, '"event" must be a string of 1 to 128 bytes'
  end
  if from ~= nil and not is_name(from) then
    return nil, nil, '"from" must be a uid: 1 to 128 characters of A-Za-z0-9_.:@=+/-'
  end
  return id == nil, ts == nil
end

-- FCALL fanout_publish 2 <stream> <meta> <channel> <body> [size ttl_ms
--   meta_ttl_ms sharded idempotency_key idempotency_ttl_ms checked]
-- <body> is a JSON object whose "data" nests at most --max-json-depth
-- levels (the body as a whole, one more); `checked` is 1 only from a node,
-- which has checked its body itself. The published and stored body is the same
-- object with "offset" and "epoch" first, and "id" and "ts" after them
-- when it had none. Returns {offset, epoch, receivers, repeated (1 when
-- the idempotency key was seen)}.
local function publish(keys, args)
  local channel, body = args[1], args[2]
  local kind = kind_of(channel or '')
  if kind == nil then
    return redis.error_reply('ERR fanout_publish: channel must be <prefix>:user:<uid>, <prefix>:group:<name> or <prefix>:all')
  end
  if body ~= nil and #body > MAX_BODY then
    return redis.error_reply('ERR fanout_publish: the body is larger than 16 MiB')
  end
  local rest = string.match(body or '', '^%s*{(.*)$')
  if rest == nil then
    return redis.error_reply('ERR fanout_publish: the body must be a JSON object')
  end
  local checked = args[9] == '1'
  local needs_id, needs_ts, invalid = missing_fields(rest, checked, DEFAULTS.max_json_depth)
  if invalid then
    return redis.error_reply('ERR fanout_publish: ' .. invalid)
  end
  local size = number(args[3], DEFAULTS[kind].size)
  local ttl = number(args[4], DEFAULTS[kind].ttl)
  local meta_ttl = number(args[5], DEFAULTS.meta_ttl)
  local sharded = number(args[6], DEFAULTS.sharded)
  local key = args[7]
  local key_ttl = number(args[8], DEFAULTS.idempotency_ttl)
  local record = nil
  if key ~= nil and key ~= '' then
    record = keys[3]
    if record == nil then
      return redis.error_reply('ERR fanout_publish: an idempotency key needs its record key as KEYS[3]')
    end
    local seen = redis.call('GET', record)
    if seen then
      local o, e, r = string.match(seen, '^(%d+) (%S+) (%d+)$')
      if o then
        return { tonumber(o), e, tonumber(r), 1 }
      end
    end
  end
  -- The epoch only (HINCRBY below returns the new top offset).
  local epoch = redis.call('HGET', keys[2], 'e')
  if not epoch then
    epoch = new_epoch(nil)
    redis.call('DEL', keys[1])
    redis.call('HSET', keys[2], 'e', epoch, 'o', 0)
  end
  local offset = redis.call('HINCRBY', keys[2], 'o', 1)
  redis.call('PEXPIRE', keys[2], meta_ttl)
  local head = '{"offset":' .. offset .. ',"epoch":"' .. epoch .. '"'
  if needs_id then
    -- Unique per channel and epoch; the channel's hash tells channels apart.
    head = head .. ',"id":"' .. string.sub(redis.sha1hex(channel), 1, 10) .. '-' .. epoch .. '-' .. offset .. '"'
  end
  if needs_ts then
    head = head .. ',"ts":' .. now_ms()
  end
  local full
  if string.match(rest, '^%s*}') then
    full = head .. '}'
  else
    full = head .. ',' .. rest
  end
  if size > 0 then
    -- Trimmed by count on every message, by age on every 16th (a TIME
    -- and an XTRIM each time cost Redis about a tenth of the call), so up
    -- to 15 entries older than the TTL may wait for their trim; reads
    -- treat them as gone (fanout_history). The key itself expires a TTL
    -- after the last message, so an idle channel's history goes whole.
    redis.call('XADD', keys[1], 'MAXLEN', size, '*', 'd', full)
    if ttl > 0 then
      if offset % 16 == 0 then
        redis.call('XTRIM', keys[1], 'MINID', now_ms() - ttl)
      end
      redis.call('PEXPIRE', keys[1], ttl)
    end
  end
  local receivers
  if sharded == 1 then
    receivers = redis.call('SPUBLISH', channel, full)
  else
    receivers = redis.call('PUBLISH', channel, full)
  end
  if record ~= nil then
    redis.call('SET', record, offset .. ' ' .. epoch .. ' ' .. receivers, 'PX', key_ttl)
  end
  return { offset, epoch, receivers, 0 }
end

-- FCALL fanout_position 2 <stream> <meta> [meta_ttl_ms]
-- Returns {top offset, epoch}.
local function position(keys, args)
  local epoch, top = meta(keys, number(args[1], DEFAULTS.meta_ttl))
  return { top, epoch }
end

-- The history TTL of the channel whose stream key is `stream`
-- (`{<prefix>:<kind>...}:h`, or `<prefix>:<kind>...:h` with a hash tag of
-- its own), from this library's defaults.
local function default_ttl(stream)
  local base = string.gsub(string.gsub(stream, ':h$', ''), '[{}]', '')
  local kind = kind_of(base)
  if kind == nil then
    return 0
  end
  return DEFAULTS[kind].ttl
end

-- FCALL fanout_history 2 <stream> <meta> <since offset> <since epoch>
--   <limit> [meta_ttl_ms [ttl_ms]]
-- Returns {top offset, epoch, complete (1/0), body...}: the bodies after
-- <since>, newest first, when all of them are still kept (and none is
-- older than the TTL), <since> is of the current epoch and there are at
-- most <limit>.
local function history(keys, args)
  local since = number(args[1], -1)
  local since_epoch = args[2]
  local limit = number(args[3], 0)
  local epoch, top = meta(keys, number(args[4], DEFAULTS.meta_ttl))
  if epoch ~= since_epoch or since < 0 or since > top then
    return { top, epoch, 0 }
  end
  local missed = top - since
  if missed == 0 then
    return { top, epoch, 1 }
  end
  if missed > limit then
    return { top, epoch, 0 }
  end
  local entries = redis.call('XREVRANGE', keys[1], '+', '-', 'COUNT', missed)
  if #entries < missed then
    return { top, epoch, 0 }
  end
  -- Entry ids are the server's clock in milliseconds when each was added:
  -- the oldest one needed must be within the TTL.
  local ttl = number(args[5], default_ttl(keys[1]))
  if ttl > 0 then
    local oldest = tonumber(string.match(entries[#entries][1], '^(%d+)-'))
    if oldest == nil or oldest < now_ms() - ttl then
      return { top, epoch, 0 }
    end
  end
  local out = { top, epoch, 1 }
  for i = 1, #entries do
    local fields = entries[i][2]
    out[#out + 1] = fields[2]
  end
  return out
end

-- FCALL fanout_reset 2 <stream> <meta> <expected epoch> [meta_ttl_ms]
-- Starts a new epoch if the channel is still at <expected epoch> (its
-- history was lost). Returns {top offset, epoch}.
local function reset(keys, args)
  local meta_ttl = number(args[2], DEFAULTS.meta_ttl)
  local epoch = redis.call('HGET', keys[2], 'e')
  if epoch == args[1] then
    redis.call('DEL', keys[1])
    redis.call('HSET', keys[2], 'e', new_epoch(epoch), 'o', 0)
  end
  local e, top = meta(keys, meta_ttl)
  return { top, e }
end

redis.register_function('fanout_publish', publish)
redis.register_function('fanout_position', position)
redis.register_function('fanout_history', history)
redis.register_function('fanout_reset', reset)
