-- iot.offline: a sensor that has sent nothing for a while (no heartbeat).
--
-- Every reading (any sensor.* event) sets the sensor's timer again; when
-- it falls due, on event time, the sensor is reported once, until it
-- sends again.
--
-- Parameters:
--   offline.after   "15m"   silence that counts as offline
--
-- Score: 1.

local tide = require "tide"
local alert = require "tide.alert"

local AFTER = tide.param("offline.after", "15m")

tide.on("sensor.*", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  if ev.type == "sensor.anomaly" then return end
  st.last = ev.time
  tide.timer.after("silent", AFTER)
end, { name = "iot.offline", key = "subject", ttl = "30d", from = "beginning",
       timers = { silent = function(sensor, data, st)
         alert.sensor("iot.offline", 1, { last = st.last, after = AFTER }, sensor)
       end } })
