-- iot.anomaly: the default anomaly detector.  It follows each sensor with
-- an exponentially weighted mean and deviation and reports a reading whose
-- distance from the mean, in deviations, passes a threshold, after a
-- warm-up; then it keeps quiet for a while (one anomaly is one alert, as
-- anomaly benchmarks such as NAB count them), and an anomalous reading
-- moves the mean less, so that a level shift is learnt without hiding the
-- next anomaly.
--
-- Parameters:
--   detector.alpha    0.005  weight of a new reading in the mean
--   detector.z        6      alert at this many deviations
--   detector.warmup   100    readings before it may alert
--   detector.quiet    "18h"  no second alert for a sensor within this
--
-- Score: 0.5 at z, toward 1 at twice z.

local tide = require "tide"
local alert = require "tide.alert"
local stats = tide.stats

local ALPHA = tide.param("detector.alpha", 0.005)
local Z = tide.param("detector.z", 6)
local WARMUP = tide.param("detector.warmup", 100)
local QUIET = tide.duration(tide.param("detector.quiet", "18h"))

tide.on("sensor.reading", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  local v = tonumber(ev.data and ev.data.value)
  if not v then return end
  st.m = st.m or {}
  st.n = (st.n or 0) + 1
  local m = st.m
  local z = 0
  if m.mean then
    local sd = math.sqrt(m.var or 0)
    z = sd > 0 and (v - m.mean) / sd or 0
  end
  if st.n > WARMUP and math.abs(z) >= Z and (not st.last or ev.time_ns - st.last >= QUIET) then
    st.last = ev.time_ns
    alert.sensor("iot.anomaly", 0.5 + 0.5 * math.min(1, (math.abs(z) - Z) / Z),
                 { value = v, mean = m.mean, z = z }, sensor)
  end
  -- an outlier weighs a tenth as much, so that it does not drag the mean
  stats.ewmvar(m, v, math.abs(z) >= Z and ALPHA / 10 or ALPHA)
end, { name = "iot.anomaly", key = "subject", ttl = "30d", from = "beginning" })
