-- tide test -s rules/iot/detector.lua rules/iot/tests/detector
-- The third question: a daily cycle that changes shape inside its range.

local T0 = "2026-01-01T00:00:00Z"
local STEP = 600 -- a reading every 10 minutes
local DAY = 86400

-- a cycle between 30 and 70 over the day, highest at 06:00
local function cycle(s)
  return 50 + 20 * math.sin(2 * math.pi * (s % DAY) / DAY)
end

local function readings(t, sensor, days, value)
  for s = 0, days * DAY - STEP, STEP do
    t:send{ type = "sensor.reading", subject = sensor, time = t.at(T0, s),
            data = { value = value(s) } }
  end
end

-- four ordinary days, then on the fifth the morning runs upside down
-- (between 03:00 and 09:00 the cycle reads 100 - itself: its low, not
-- its high, but never outside the range the sensor has seen)
local function turned(s)
  local tod = s % DAY
  if s >= 4 * DAY and tod >= 3 * 3600 and tod < 9 * 3600 then return 100 - cycle(s) end
  return cycle(s)
end

local function tests_of(alerts)
  local v = {}
  for _, a in ipairs(alerts) do v[#v + 1] = a.data.test end
  return v
end

test("a daily cycle that changes shape is reported once, as off its day", function(t)
  readings(t, "cycle", 5, turned)
  local alerts = t:emitted("sensor.anomaly")
  t:eq(tests_of(alerts), { "daily" })
  local a = alerts[1].data
  t:eq(a.rule, "iot.anomaly")
  t:ok(a.time == nil and a.value < 50 and a.usual > 50, "a low reading where the day is high")
  t:ok(a.distance > a.limit and a.score >= 0.5 and a.score <= 1, "distance past the limit")
  -- the first reading past 03:00 of the fifth day that differs enough
  t:eq(alerts[1].time >= t.at(T0, 4 * DAY + 3 * 3600), true)
end)

test("the same cycle unchanged raises nothing", function(t)
  readings(t, "cycle", 5, cycle)
  t:eq(#t:emitted("sensor.anomaly"), 0)
  local st = t:rule("iot.anomaly", "cycle")
  t:ok(st.slots["1"] ~= nil and st.slots["48"] ~= nil, "the slots are kept by name")
  t:ok(st.off / st.spread < 0.3, "the cycle counts as a daily pattern")
end)

test("a sensor with no daily pattern is not asked", function(t)
  local x = 12345
  local function noise()
    x = (1103515245 * x + 12345) % 2147483648
    return 40 + 20 * x / 2147483648
  end
  readings(t, "noise", 5, noise)
  t:eq(#t:emitted("sensor.anomaly"), 0)
  local st = t:rule("iot.anomaly", "noise")
  t:ok(st.off / st.spread > 0.3, "its readings are as far from their slots as from their level")
end)

test("detector.daily = 0 leaves the question out", function(t)
  t:set("detector.daily", 0)
  readings(t, "cycle", 5, turned)
  for _, test_name in ipairs(tests_of(t:emitted("sensor.anomaly"))) do
    t:ok(test_name ~= "daily", "no alert off its day")
  end
end)

test("a reading without a time is handled (no time of day to ask about)", function(t)
  for k = 1, 3 do
    t:send{ type = "sensor.reading", subject = "timeless", data = { value = k } }
  end
  local st = t:rule("iot.anomaly", "timeless")
  t:eq(st.n, 3)
  t:eq(st.slots, nil)
end)
