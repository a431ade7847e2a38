-- iot.rate: a reading that changed too fast since the sensor's previous
-- one (per minute of event time).
--
-- Parameters:
--   rate.max   10    alert above this change per minute (either way)
--
-- Score: 0.5 at the limit, toward 1 at twice it.

local tide = require "tide"
local alert = require "tide.alert"

local MAX = tide.param("rate.max", 10)

tide.on("sensor.reading", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  local v = tonumber(ev.data and ev.data.value)
  if not v then return end
  if st.v and ev.time_ns > st.at then
    local per_min = (v - st.v) / ((ev.time_ns - st.at) / 6e10)
    if math.abs(per_min) > MAX then
      alert.sensor("iot.rate", 0.5 + 0.5 * math.min(1, (math.abs(per_min) - MAX) / MAX),
                   { value = v, previous = st.v, per_minute = per_min }, sensor)
    end
  end
  st.v, st.at = v, ev.time_ns
end, { name = "iot.rate", key = "subject", ttl = "30d", from = "beginning" })
