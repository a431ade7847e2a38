-- rules.lua - the sensor gateway's alert rule (examples/embed/gateway.c).
--
-- A reading over its metric's limit becomes a sensor.alert for the same
-- device, emitted in the same transaction as this consumer's checkpoint:
-- one alert per reading, even across a crash.  Metrics without a limit
-- raise none.  Change a limit and send the gateway SIGHUP: the new rule
-- takes over from the same checkpoint.
local tide = require "tide"

local limits = {
  temperature = 80,   -- degrees Celsius
  humidity = 95,      -- percent
  pressure = 1050,    -- hPa
}

tide.on("sensor.reading", function(ev)
  local metric, value = ev.data.metric, ev.data.value
  local limit = limits[metric]
  if limit ~= nil and type(value) == "number" and value > limit then
    tide.emit{
      type = "sensor.alert",
      subject = ev.subject,
      data = { metric = metric, value = value, limit = limit, reading = ev.seq },
    }
  end
end, { name = "thresholds", from = "beginning" })
