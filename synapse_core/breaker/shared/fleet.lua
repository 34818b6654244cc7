-- The fleet state of one shared circuit breaker (synapse_core.breaker.shared), schema v1.
--
-- One script, one operation per call (ARGV[1]); every decision that changes the fleet's state
-- is taken here, atomically, once. Times are this server's clock (TIME), in seconds.
-- KEYS: 1 state (hash), 2 window (hash: bucket index -> "successes failures slow"),
--       3 probes (hash: replica -> probes it holds), 4 replicas (hash: replica -> last seen).
-- ARGV: 1 op, 2 replica, 3 token for a new state, 4 channel, 5 bucket width, 6 recovery
--       timeout, 7 backoff multiplier, 8 recovery cap (< 0: none), 9 half_open_max_calls,
--       10 probe successes that close, 11 max_half_open_wait (< 0: none), 12 key TTL (ms),
--       13 seconds a replica stays alive unheard, 14 config fingerprint, 15... the op's own.
-- Returns (and publishes on every change of state or probes) the state as JSON, plus for
-- "flush" the bucket index now and the window as it was stored before this batch.

local op, me, channel = ARGV[1], ARGV[2], ARGV[4]
local WIDTH, RT, MULT, CAP = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local MAXP, TARGET, WAIT = tonumber(ARGV[9]), tonumber(ARGV[10]), tonumber(ARGV[11])
local TTL, LIVE = tonumber(ARGV[12]), tonumber(ARGV[13])
local BUCKETS = 100
local INF = math.huge

local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function num(value)
  if value == 'inf' then return INF end
  return tonumber(value)
end

local function text(value)
  if value == INF then return 'inf' end
  return string.format('%.6f', value)
end

-- the state ------------------------------------------------------------------------------
local S = {}
local raw = redis.call('HGETALL', KEYS[1])
for i = 1, #raw, 2 do S[raw[i]] = raw[i + 1] end
local created = S.token == nil
if created then
  S = {token = ARGV[3], epoch = '0', state = 'closed', open_until = '0', forced = '0',
       consec = '0', since = text(now), ho_since = '0', reason = 'created', by = me,
       fails = '0', adm = '0', ok = '0', bad = '0', high = '0', n_ok = '0', n_fail = '0',
       n_rej = '0', n_ign = '0', cfg = ARGV[14]}
end
local st = S.state
local epoch = tonumber(S.epoch)
local open_until, forced, consec = num(S.open_until), tonumber(S.forced), tonumber(S.consec)
local since, ho_since = num(S.since), num(S.ho_since)
local adm, ok, bad, high = tonumber(S.adm), tonumber(S.ok), tonumber(S.bad), tonumber(S.high)
local n_ok, n_fail, n_rej, n_ign = tonumber(S.n_ok), tonumber(S.n_fail), tonumber(S.n_rej), tonumber(S.n_ign)
local changed = created   -- the state hash must be written
local publish = false     -- the other replicas must hear of it

-- the replicas: everyone who calls is alive now -------------------------------------------
redis.call('HSET', KEYS[4], me, text(now))
local alive = 0
local seen = redis.call('HGETALL', KEYS[4])
local last_seen = {}
for i = 1, #seen, 2 do
  local at = tonumber(seen[i + 1])
  last_seen[seen[i]] = at
  if now - at <= LIVE then
    alive = alive + 1
  elseif now - at > 10 * LIVE then
    redis.call('HDEL', KEYS[4], seen[i])  -- long gone: nothing grows without bound
  end
end

-- transitions (as the local breaker's _to_open, _to_half_open, _to_closed) ------------------
local function open_duration(n)
  if MULT == 1 or n <= 0 then return RT end
  if n > 1024 then n = 1024 end
  local grown = RT * MULT ^ n
  if CAP >= 0 and grown > CAP then return CAP end
  return grown
end

local function transition(to, at, why)
  st = to
  epoch = epoch + 1
  since = at
  S.reason = why
  S.by = me
  adm, ok, bad = 0, 0, 0
  redis.call('DEL', KEYS[2], KEYS[3])
  changed, publish = true, true
end

local function to_open(at, why, failures, is_forced, till)
  if st == 'half_open' then consec = consec + 1 elseif st == 'closed' then consec = 0 end
  forced = is_forced and 1 or 0
  if is_forced then
    open_until = INF
  elseif till ~= nil then
    open_until = till
  else
    open_until = at + open_duration(consec)
  end
  S.fails = tostring(failures)
  transition('open', at, why)
end

local function to_half_open(at)
  transition('half_open', at, 'recovery timeout elapsed')
  ho_since = at
end

local function to_closed(at, why)
  forced, consec = 0, 0
  transition('closed', at, why)
end

-- probes held by replicas that stopped answering are given back ----------------------------
local function free_dead_probes()
  local held = redis.call('HGETALL', KEYS[3])
  for i = 1, #held, 2 do
    local at = last_seen[held[i]]
    if at == nil or now - at > LIVE then
      adm = adm - tonumber(held[i + 1])
      redis.call('HDEL', KEYS[3], held[i])
      changed, publish = true, true
    end
  end
end

-- the window's figures (for stats) --------------------------------------------------------
local win_n, win_f, win_s, counted = 0, 0, 0, false
local function count_window(index)
  win_n, win_f, win_s, counted = 0, 0, 0, true
  local stored = redis.call('HGETALL', KEYS[2])
  for i = 1, #stored, 2 do
    if tonumber(stored[i]) > index - BUCKETS then
      local s, f, w = string.match(stored[i + 1], '(%d+) (%d+) (%d+)')
      win_n, win_f, win_s = win_n + s + f, win_f + f, win_s + w
    end
  end
end

-- the operations --------------------------------------------------------------------------
local extra = {}
local granted, applied = 0, 0
if op == 'flush' then
  -- ARGV 15 token, 16 epoch, 17 successes, 18 failures, 19 slow, 20 rejections, 21 whether
  -- the caller judges by bucket (a rate rule: ageing matters) or by the totals
  local succ, fail, slow, rej = tonumber(ARGV[17]), tonumber(ARGV[18]), tonumber(ARGV[19]), tonumber(ARGV[20])
  n_ok, n_fail, n_rej = n_ok + succ, n_fail + fail, n_rej + rej
  changed = true
  local index = math.floor(now / WIDTH)
  extra[1] = tostring(index)
  if ARGV[15] == S.token and tonumber(ARGV[16]) == epoch and st == 'closed' then
    applied = 1
    local stored = redis.call('HGETALL', KEYS[2])
    local bad_calls = fail + slow
    local kept = {}
    for i = 1, #stored, 2 do
      local b = tonumber(stored[i])
      local s, f, w = string.match(stored[i + 1], '(%d+) (%d+) (%d+)')
      bad_calls = bad_calls + tonumber(f) + tonumber(w)
      if b <= index - BUCKETS then
        redis.call('HDEL', KEYS[2], stored[i])
      end
      kept[#kept + 1] = stored[i]
      kept[#kept + 1] = stored[i + 1]
    end
    if succ + fail + slow > 0 then
      local current = redis.call('HGET', KEYS[2], extra[1])
      local s, f, w = 0, 0, 0
      if current then
        s, f, w = string.match(current, '(%d+) (%d+) (%d+)')
      end
      redis.call('HSET', KEYS[2], extra[1],
        string.format('%d %d %d', tonumber(s) + succ, tonumber(f) + fail, tonumber(w) + slow))
    end
    redis.call('PEXPIRE', KEYS[2], TTL)
    count_window(index)
    -- Only failures and slow calls can trip a window: without any, the caller needs no more.
    if bad_calls > 0 and ARGV[21] == '1' then
      for i = 1, #kept do extra[#extra + 1] = kept[i] end
    end
  else
    n_ign = n_ign + succ + fail  -- outcomes of a closed state the fleet has left
  end
elseif op == 'trip' then
  -- ARGV 15 token ('*': any), 16 epoch (< 0: any closed one), 17 reason, 18 failures, 19 at (< 0: now),
  -- 20 seconds to stay open from now (< 0: the open duration from at)
  local want = tonumber(ARGV[16])
  if (ARGV[15] == S.token or ARGV[15] == '*') and st == 'closed' and (want < 0 or want == epoch) then
    local at = tonumber(ARGV[19])
    if at < 0 or at > now then at = now end
    local till = tonumber(ARGV[20])
    if till < 0 then till = nil else till = now + till end
    to_open(at, ARGV[17], tonumber(ARGV[18]), false, till)
  end
elseif op == 'probe' then
  if st == 'half_open' then
    free_dead_probes()
    if WAIT >= 0 and now - ho_since >= WAIT then
      local deadline = ho_since + WAIT
      to_open(deadline,
        string.format('half-open probes gave no verdict within max_half_open_wait=%gs', WAIT),
        bad, false)
    end
  end
  if st == 'open' then
    if forced == 0 and now >= open_until then
      to_half_open(now)
      adm, granted = 1, 1
    end
  elseif st == 'half_open' then
    if adm < MAXP then adm, granted = adm + 1, 1 end
  else
    granted = 2  -- closed: admitted as any call
  end
  if granted == 1 then
    redis.call('HINCRBY', KEYS[3], me, 1)
    redis.call('PEXPIRE', KEYS[3], TTL)
    if adm > high then high = adm end
    changed, publish = true, true
  end
elseif op == 'report' then
  -- ARGV 15 token, 16 epoch, 17 how ('success', 'slow', 'failure', 'timeout', 'release')
  local how = ARGV[17]
  local mine = tonumber(redis.call('HGET', KEYS[3], me) or '0')
  changed = true
  if ARGV[15] ~= S.token or tonumber(ARGV[16]) ~= epoch or st ~= 'half_open' or mine <= 0 then
    if how ~= 'release' then n_ign = n_ign + 1 end
  else
    redis.call('HINCRBY', KEYS[3], me, -1)
    publish = true
    if how == 'release' then
      adm = adm - 1
    elseif how == 'success' then
      ok, n_ok = ok + 1, n_ok + 1
      if ok >= TARGET then to_closed(now, string.format('%d probe calls succeeded', ok)) end
    else
      bad = bad + 1
      local why = 'slow probe call'
      if how == 'slow' then n_ok = n_ok + 1 else
        n_fail = n_fail + 1
        why = 'probe call failed (' .. how .. ')'
      end
      if bad > MAXP - TARGET then to_open(now, 'half-open: ' .. why, bad, false) end
    end
  end
elseif op == 'force' then
  -- ARGV 15 what ('open', 'close', 'reset'), 16 reason
  local what = ARGV[15]
  if what == 'open' then
    if st == 'open' then
      forced, open_until, S.by, S.reason = 1, INF, me, ARGV[16]
      changed, publish = true, true
    else
      to_open(now, ARGV[16], 0, true, nil)
    end
  elseif st ~= 'closed' then
    to_closed(now, ARGV[16])
  else
    redis.call('DEL', KEYS[2])  -- closed already: as a local breaker, it forgets its window
  end
  if what == 'reset' then
    n_ok, n_fail, n_rej, n_ign, high, consec = 0, 0, 0, 0, 0, 0
    S.cfg = ARGV[14]
  end
elseif op ~= 'sync' then
  return redis.error_reply('unknown operation ' .. op)
end
-- Whatever the operation, probes of a replica that died are given back: a replica that saw
-- every slot taken never asks for one, it only flushes (its heartbeat) until it hears.
if st == 'half_open' and op ~= 'probe' then free_dead_probes() end
if op == 'sync' and st == 'closed' then count_window(math.floor(now / WIDTH)) end

-- write, publish, answer ------------------------------------------------------------------
if changed then
  redis.call('HSET', KEYS[1], 'token', S.token, 'epoch', tostring(epoch), 'state', st,
    'open_until', text(open_until), 'forced', tostring(forced), 'consec', tostring(consec),
    'since', text(since), 'ho_since', text(ho_since), 'reason', S.reason, 'by', S.by,
    'fails', S.fails, 'adm', tostring(adm), 'ok', tostring(ok), 'bad', tostring(bad),
    'high', tostring(high), 'n_ok', tostring(n_ok), 'n_fail', tostring(n_fail),
    'n_rej', tostring(n_rej), 'n_ign', tostring(n_ign), 'cfg', S.cfg)
end
redis.call('PEXPIRE', KEYS[1], TTL)
redis.call('PEXPIRE', KEYS[4], TTL)

local remaining = -1  -- forced open
if forced == 0 then remaining = math.min(math.max(0, open_until - now), 1e18) end
local answer = cjson.encode({
  token = S.token, epoch = epoch, state = st, remaining = remaining, forced = forced,
  consec = consec, age = now - since, ho_age = now - ho_since, reason = S.reason, by = S.by,
  fails = tonumber(S.fails), adm = adm, ok = ok, bad = bad, high = high, alive = alive,
  n_ok = n_ok, n_fail = n_fail, n_rej = n_rej, n_ign = n_ign, cfg = S.cfg, granted = granted, applied = applied,
  win_n = win_n, win_f = win_f, win_s = win_s, window = counted,
})
if publish then redis.call('PUBLISH', channel, answer) end
local reply = {answer}
for i = 1, #extra do reply[#reply + 1] = extra[i] end
return reply
