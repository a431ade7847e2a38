-- iot.seasonal: a reading far from what the sensor read at the same time
-- yesterday and a week ago (hourly means, kept for eight days).
--
-- Parameters:
--   seasonal.rel   0.5   alert when off the baseline by more than this
--                        fraction of it...
--   seasonal.abs   5     ...and by more than this much
--
-- The baseline is the mean of the same hour yesterday and a week ago
-- (either, when only one is known).  Score: 0.5 at the limit, toward 1
-- at twice it.

local tide = require "tide"
local alert = require "tide.alert"

local REL = tide.param("seasonal.rel", 0.5)
local ABS = tide.param("seasonal.abs", 5)
local HOUR = 3600 * 1000000000

tide.on("sensor.reading", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  local v = tonumber(ev.data and ev.data.value)
  if not v then return end
  local h = ev.time_ns // HOUR
  st.hours = st.hours or {}
  local hours = st.hours
  local refs = {}
  for _, back in ipairs({ 24, 168 }) do
    local b = hours[tostring(h - back)]
    if b then refs[#refs + 1] = b.sum / b.n end
  end
  if #refs > 0 then
    local base = 0
    for _, r in ipairs(refs) do base = base + r end
    base = base / #refs
    local limit = math.max(ABS, REL * math.abs(base))
    local off = math.abs(v - base)
    if off > limit then
      alert.sensor("iot.seasonal", 0.5 + 0.5 * math.min(1, (off - limit) / limit),
                   { value = v, baseline = base }, sensor)
    end
  end
  local key = tostring(h)
  local b = hours[key] or { sum = 0, n = 0 }
  b.sum, b.n = b.sum + v, b.n + 1
  hours[key] = b
  -- hours older than eight days go
  for k in pairs(hours) do
    if tonumber(k) < h - 192 then hours[k] = nil end
  end
end, { name = "iot.seasonal", key = "subject", ttl = "30d", from = "beginning" })
