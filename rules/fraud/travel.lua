-- fraud.travel: a card used in two places too far apart for the time
-- between them (impossible travel), from data.lat and data.lon.
--
-- Parameters:
--   travel.max_kmh   900    faster than this between two transactions
--   travel.min_km    100    and at least this far apart
--
-- Score: 0.5 at max_kmh, toward 1 faster (1 - max_kmh / speed).

local tide = require "tide"
local alert = require "tide.alert"

local MAX_KMH = tide.param("travel.max_kmh", 900)
local MIN_KM = tide.param("travel.min_km", 100)

local R = 6371.0088 -- mean Earth radius, km
local function km(lat1, lon1, lat2, lon2)
  local rad = math.pi / 180
  local dlat, dlon = (lat2 - lat1) * rad, (lon2 - lon1) * rad
  local a = math.sin(dlat / 2) ^ 2
            + math.cos(lat1 * rad) * math.cos(lat2 * rad) * math.sin(dlon / 2) ^ 2
  return 2 * R * math.asin(math.min(1, math.sqrt(a)))
end

tide.on("card.transaction", function(ev, st, card)
  if not st then return end -- no key: not for this rule
  local d = ev.data
  local lat, lon = tonumber(d and d.lat), tonumber(d and d.lon)
  if not lat or not lon then return end
  local now = ev.time_ns
  if st.lat then
    local dist = km(st.lat, st.lon, lat, lon)
    local hours = (now - st.at) / 3.6e12
    local speed = hours > 0 and dist / hours or math.huge
    if dist >= MIN_KM and speed > MAX_KMH then
      alert.fraud("fraud.travel", 1 - MAX_KMH / speed,
                  { km = dist, minutes = hours * 60,
                    kmh = speed ~= math.huge and speed or nil }, card)
    end
  end
  st.lat, st.lon, st.at = lat, lon, now
end, { name = "fraud.travel", key = "subject", ttl = "30d", from = "beginning" })
