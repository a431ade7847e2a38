-- iot.threshold: a reading over a high mark, with hysteresis: one alert
-- when a sensor goes over `high`, none more until it has come back under
-- `low` (so a value hovering at the mark does not alert at every reading).
--
-- Parameters:
--   threshold.high   90    alert when a reading goes over this
--   threshold.low    80    armed again once a reading is under this
--
-- Score: 0.5 at `high`, 1 at `high + (high - low)` and beyond.

local tide = require "tide"
local alert = require "tide.alert"

local HIGH = tide.param("threshold.high", 90)
local LOW = tide.param("threshold.low", 80)

tide.on("sensor.reading", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  local v = tonumber(ev.data and ev.data.value)
  if not v then return end
  if st.over then
    if v < LOW then return tide.delete end -- armed again: nothing to keep
  elseif v > HIGH then
    st.over = true
    alert.sensor("iot.threshold", 0.5 + 0.5 * math.min(1, (v - HIGH) / (HIGH - LOW)),
                 { value = v, high = HIGH, low = LOW }, sensor)
  end
end, { name = "iot.threshold", key = "subject", ttl = "30d", from = "beginning" })
