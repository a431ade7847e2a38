-- tide.pattern: absence and sequences per key, built on rules (durable
-- state per key and timers on the rule's clock).
--
--   local pattern = require "tide.pattern"
--
--   -- no sensor.reading for a sensor within 15 minutes of its last one
--   pattern.absence{ name = "silent", on = "sensor.reading", within = "15m",
--                    emit = "sensor.silent" }
--
--   -- a transaction under 2 followed by one over 500 within 10 minutes
--   pattern.sequence{ name = "card_testing", within = "10m",
--     steps = { { type = "card.transaction", where = function(ev) return ev.data.amount < 2 end },
--               { type = "card.transaction", where = function(ev) return ev.data.amount > 500 end } },
--     emit = function(key, events) return { type = "fraud.alert", subject = key,
--              data = { rule = "card_testing", score = 1 } } end }
--
--   -- an order placed and not paid within 30 minutes (a last step marked
--   -- absent: it must NOT happen within the bound)
--   pattern.sequence{ name = "unpaid", within = "30m",
--     steps = { { type = "order.placed" }, { type = "order.paid", absent = true } },
--     emit = "order.unpaid" }
--
-- Each is a consumer (tide.on) with a key (default: the subject), so the
-- partial matches live in the log with the rest of the rule's state and
-- survive restarts; time is the rule's clock (event time by default).
-- `emit` is an event type (the alert gets subject = key and data = {
-- pattern = name, events = { ids... } }) or a function(key, events)
-- returning the event to emit (or nil for none).  Other options of
-- tide.on (from, clock, lateness, retries...) are handed on.

local tide = require "tide"

local pattern = {}

local passed = { key = true, from = true, clock = true, lateness = true, late = true,
                 retries = true, backoff = true, backoff_max = true, ttl = true }

local function check(spec, what)
  assert(type(spec) == "table", what .. ": expects a table")
  assert(type(spec.name) == "string", what .. ": 'name' must be a string")
  assert(spec.within ~= nil, what .. ": 'within' (a duration) is required")
  assert(type(spec.emit) == "string" or type(spec.emit) == "function",
         what .. ": 'emit' must be an event type or a function")
  return tide.duration(spec.within)
end

local function options(spec, timers)
  local o = { name = spec.name, key = spec.key or "subject", timers = timers }
  for k, v in pairs(spec) do
    if passed[k] and k ~= "key" then o[k] = v end
  end
  return o
end

local function alert(spec, key, events)
  local ev
  if type(spec.emit) == "function" then
    ev = spec.emit(key, events)
  else
    local ids = {}
    for i, e in ipairs(events) do ids[i] = e.id end
    ev = { type = spec.emit, subject = key,
           data = { pattern = spec.name, events = tide.array(ids) } }
  end
  if ev ~= nil then tide.emit(ev) end
end

-- The event as kept in a partial match.
local function kept(ev, keep_data)
  return { id = ev.id, type = ev.type, time_ns = ev.time_ns or ev.recorded_ns,
           data = keep_data and ev.data or nil }
end

-- A type pattern covering every step: the one type, "prefix.*" for the
-- longest dotted prefix they share, or "*".
local function covering(steps)
  local common = steps[1].type
  for i = 2, #steps do
    local t = steps[i].type
    while common ~= "" and t ~= common and t:sub(1, #common + 1) ~= common .. "." do
      common = common:match("^(.*)%.[^.]*$") or ""
    end
  end
  local same = true
  for i = 2, #steps do same = same and steps[i].type == steps[1].type end
  if same then return common end
  -- "a.b.*" covers the types below "a.b", not "a.b" itself: a step of
  -- that very type needs the level above
  for _, s in ipairs(steps) do
    if s.type == common then
      common = common:match("^(.*)%.[^.]*$") or ""
      break
    end
  end
  return common == "" and "*" or common .. ".*"
end

local function type_matches(p, t)
  if p == "*" or p == t then return true end
  return p:sub(-2) == ".*" and t:sub(1, #p - 1) == p:sub(1, -2)
end

local function step_matches(step, ev)
  return type_matches(step.type, ev.type) and (step.where == nil or step.where(ev))
end

-- absence{ name, on, within, emit [, key, ...] }
function pattern.absence(spec)
  check(spec, "pattern.absence")
  assert(type(spec.on) == "string", "pattern.absence: 'on' must be an event type")
  tide.on(spec.on, function(ev, st)
    st.last = ev.id
    tide.timer.after("absent", spec.within, { id = ev.id })
  end, options(spec, {
    absent = function(key, data, st)
      alert(spec, key, { { id = data.id } })
      return tide.delete -- nothing to remember until the key is seen again
    end,
  }))
end

-- sequence{ name, steps, within, emit [, key, max_partial, keep_data, ...] }
function pattern.sequence(spec)
  local within = check(spec, "pattern.sequence")
  local steps = spec.steps
  assert(type(steps) == "table" and #steps >= 2, "pattern.sequence: 'steps' needs at least two steps")
  for i, s in ipairs(steps) do
    assert(type(s.type) == "string", "pattern.sequence: step " .. i .. " needs a 'type'")
    assert(not s.absent or i == #steps, "pattern.sequence: only the last step may be absent")
  end
  local negated = steps[#steps].absent
  local need = negated and #steps - 1 or #steps
  local max_partial = spec.max_partial or 16

  -- the earliest deadline of the matches waiting for an absence
  local function arm(st)
    local due
    for _, p in ipairs(st.partial) do
      if p.deadline and (due == nil or p.deadline < due) then due = p.deadline end
    end
    if due then tide.timer.at("absent", due) else tide.timer.cancel("absent") end
  end

  tide.on(covering(steps), function(ev, st, key)
    local now = ev.time_ns or ev.recorded_ns
    local keep, waiting = {}, false
    -- what has waited too long goes; a forbidden event ends the waits
    for _, p in ipairs(st.partial or {}) do
      if p.deadline then
        if not step_matches(steps[#steps], ev) then keep[#keep + 1] = p end
      elseif now - p.start <= within then
        keep[#keep + 1] = p
      end
    end
    -- the oldest match this event is the next step of advances (one event
    -- completes one step of one match); if none, it may start a new one
    local partial, advanced = {}, false
    for _, p in ipairs(keep) do
      if not advanced and not p.deadline and step_matches(steps[#p.events + 1], ev) then
        advanced = true
        p.events[#p.events + 1] = kept(ev, spec.keep_data)
      end
      if not p.deadline and #p.events == need then
        if negated then p.deadline = p.start + within else alert(spec, key, p.events) end
      end
      if p.deadline or #p.events < need then partial[#partial + 1] = p end
    end
    if not advanced and step_matches(steps[1], ev) then
      local p = { start = now, events = { kept(ev, spec.keep_data) } }
      if need == 1 then p.deadline = now + within end
      partial[#partial + 1] = p
      while #partial > max_partial do table.remove(partial, 1) end
    end
    for _, p in ipairs(partial) do waiting = waiting or p.deadline ~= nil end
    st.partial = partial
    if negated then arm(st) end
    if #partial == 0 then return tide.delete end
  end, options(spec, {
    absent = function(key, data, st)
      local now, keep = tide.clock(), {}
      for _, p in ipairs(st.partial or {}) do
        if p.deadline and p.deadline <= now then alert(spec, key, p.events)
        else keep[#keep + 1] = p end
      end
      st.partial = keep
      arm(st)
      if #keep == 0 then return tide.delete end
    end,
  }))
end

return pattern
