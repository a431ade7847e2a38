-- Rules over card transactions and sensor readings, each remembering
-- what it needs in the log (see README.md, "Rules").
local tide = require "tide"
local pattern = require "tide.pattern"

-- Velocity: too many purchases, or too much spent, in the last hour.
tide.on("card.transaction", function(ev, st, card)
  local h1 = tide.window("h1")
  if (h1.count >= 6 or h1.sum > 1500) and not st.alerted then
    st.alerted = true -- once per card until the hour calms down
    tide.emit{ type = "fraud.alert", subject = card,
               data = { rule = "velocity", n1h = h1.count, spent1h = h1.sum,
                        score = math.floor(math.min(1, h1.sum / 3000) * 100 + 0.5) / 100 } }
  elseif h1.count < 3 then
    st.alerted = nil
  end
end, { name = "velocity", key = "subject", ttl = "7d",
       windows = { h1 = { sliding = "1h", value = "data.amount", aggregates = { "count", "sum" } },
                   day = { tumbling = "1d", value = "data.amount" } } })

-- Card testing: a tiny amount, then a large one within 10 minutes.
pattern.sequence{ name = "card_testing", within = "10m",
  steps = { { type = "card.transaction", where = function(ev) return ev.data.amount < 2 end },
            { type = "card.transaction", where = function(ev) return ev.data.amount > 500 end } },
  emit = function(card, events)
    return { type = "fraud.alert", subject = card,
             data = { rule = "card_testing", score = 0.9, events = tide.array{ events[1].id, events[2].id } } }
  end }

-- A sensor that stops reporting for 15 minutes.
pattern.absence{ name = "silent", on = "sensor.reading", within = "15m", emit = "sensor.silent" }

-- A reading far from the sensor's last 30.
tide.on("sensor.reading", function(ev, st, sensor)
  local w = tide.window("last30")
  local z = tide.stats.zscore(ev.data.value, w.mean, w.stddev)
  if w.count >= 10 and z and math.abs(z) > 4 then
    tide.emit{ type = "sensor.anomaly", subject = sensor,
               data = { rule = "zscore", value = ev.data.value, mean = math.floor(w.mean * 100 + 0.5) / 100,
                        score = math.floor(tide.stats.erf(math.abs(z) / math.sqrt(2)) * 1000) / 1000 } }
  end
end, { name = "anomaly", key = "subject",
       windows = { last30 = { last = 31, value = "data.value", aggregates = { "mean", "stddev" } } } })
