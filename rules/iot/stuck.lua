-- iot.stuck: a sensor that reads exactly the same value again and again
-- (frozen, or disconnected from what it measures).  One alert when it has
-- read the same value `count` times in a row, none more until it changes.
--
-- Parameters:
--   stuck.count   20    readings of the same value in a row
--
-- Score: 1.

local tide = require "tide"
local alert = require "tide.alert"

local COUNT = tide.param("stuck.count", 20)

tide.on("sensor.reading", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  local v = tonumber(ev.data and ev.data.value)
  if not v then return end
  if v == st.v then
    st.n = st.n + 1
  else
    st.v, st.n, st.told = v, 1, nil
  end
  if st.n >= COUNT and not st.told then
    st.told = true
    alert.sensor("iot.stuck", 1, { value = v, readings = st.n }, sensor)
  end
end, { name = "iot.stuck", key = "subject", ttl = "30d", from = "beginning" })
