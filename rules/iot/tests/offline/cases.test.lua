-- tide test -s rules/iot/offline.lua rules/iot/tests/offline
-- Timers on event time: a silent sensor is reported once, when the
-- readings of others carry the clock past its silence.

local T0 = "2026-01-01T00:00:00Z"

local function reading(t, sensor, minute)
  return t:send{ type = "sensor.reading", subject = sensor,
                 time = t.at(T0, 60 * minute), data = { value = 1 } }
end

test("a sensor silent for 15 minutes is reported once", function(t)
  for m = 0, 40 do
    reading(t, "busy", m)
    if m <= 10 then reading(t, "quiet", m) end
  end
  t:expect({ { type = "sensor.anomaly", subject = "quiet",
               data = { rule = "iot.offline", score = 1, after = "15m",
                        last = t.at(T0, 600) } } })
end)

test("a reading in time keeps the sensor online", function(t)
  for m = 0, 40 do
    reading(t, "busy", m)
    if m % 10 == 0 then reading(t, "steady", m) end
  end
  t:eq(#t:emitted("sensor.anomaly"), 0)
  t:eq(t:rule("iot.offline", "steady"), { last = t.at(T0, 2400) })
end)

test("the silence is a parameter", function(t)
  t:set("offline.after", "5m")
  for m = 0, 20 do
    reading(t, "busy", m)
    if m % 10 == 0 then reading(t, "steady", m) end
  end
  t:eq(#t:emitted("sensor.anomaly"), 2, "twice silent for 5 minutes")
end)
