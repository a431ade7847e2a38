-- iot.zscore: a reading far from the sensor's recent readings: its
-- distance from their mean, in standard deviations, over a sliding window
-- of event time.
--
-- Parameters:
--   zscore.window   "1h"   the window of recent readings
--   zscore.z        4      alert at this many deviations (either side)
--   zscore.min      30     only once the window holds this many readings
--
-- Score: 0.5 at z, toward 1 at twice z.

local tide = require "tide"
local alert = require "tide.alert"

local WINDOW = tide.param("zscore.window", "1h")
local Z = tide.param("zscore.z", 4)
local MIN = tide.param("zscore.min", 30)

tide.on("sensor.reading", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  local v = tonumber(ev.data and ev.data.value)
  local w = tide.window("recent")
  if not v or w.count < MIN or not (w.stddev > 0) then return end
  local z = (v - w.mean) / w.stddev
  if math.abs(z) >= Z then
    alert.sensor("iot.zscore", 0.5 + 0.5 * math.min(1, (math.abs(z) - Z) / Z),
                 { value = v, mean = w.mean, sd = w.stddev, z = z }, sensor)
  end
end, { name = "iot.zscore", key = "subject", ttl = "30d", from = "beginning",
       windows = { recent = { sliding = WINDOW, value = "data.value",
                              aggregates = { "count", "mean", "stddev" } } } })
