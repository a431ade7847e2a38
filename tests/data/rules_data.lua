-- rules_data.lua - the rules tests/rules_data_test.sh runs over public
-- labelled data: card transactions of the Fraud Detection Handbook's
-- simulation and sensor series of the Numenta Anomaly Benchmark.
--
-- Everything that must survive a kill -9 is here: keyed state with a ttl,
-- sliding, tumbling and count windows, on_close, an absence timer per
-- card, a pattern sequence, and a tide.shared table written by two
-- consumers.  Every alert is a fraud.alert or a sensor.anomaly whose
-- data.rule names the rule that raised it.

local tide = require "tide"
local pattern = require "tide.pattern"

local DAY0 = 1522540800 * 1000000000 -- 2018-04-01T00:00:00Z in ns
local DAY = 86400 * 1000000000

local function cents(x)
  return math.floor(x * 100 + 0.5) / 100
end

-- Both card consumers count what they see here and number their alerts
-- from one counter: each alert's n depends on the order in which the two
-- consumers met the events, which a restart or a replay must not change.
local counts = tide.shared("counts", { alerts = 0, cards = 0, terminals = 0 })

local function alert(rule, subject, data)
  counts.alerts = counts.alerts + 1
  data.rule = rule
  data.n = counts.alerts
  tide.emit{ type = "fraud.alert", subject = subject, data = data }
end

-- Per card: a lifetime profile in the key's state, 1 h and 24 h sliding
-- windows, a daily tumbling window and a timer for a card that goes quiet.
tide.on("card.transaction", function(ev, st, card)
  counts.cards = counts.cards + 1
  local amount = ev.data.amount
  local h1, d1 = tide.window("h1"), tide.window("d1")

  -- velocity: the fourth transaction within an hour
  if h1.count == 4 then
    alert("velocity", card, { count = h1.count, sum = cents(h1.sum), last = ev.id })
  end

  -- spend: 24 h spending goes over 1,000 (once, until it falls back)
  if d1.sum > 1000 then
    if not st.over then
      alert("spend_24h", card, { sum = cents(d1.sum), count = d1.count, last = ev.id })
      st.over = true
    end
  else
    st.over = nil
  end

  -- spike: an amount far above the card's usual ones (a leaked card's
  -- amounts are multiplied in the simulation)
  st.n = (st.n or 0) + 1
  if st.n > 5 and amount > 4 * st.sum / (st.n - 1) and amount > 50 then
    alert("spike", card, { amount = amount, usual = cents(st.sum / (st.n - 1)), id = ev.id })
  end
  st.sum = (st.sum or 0) + amount

  -- dormant: no transaction for three days (moved by every transaction)
  tide.timer.after("quiet", "3d", { last = ev.id, amount = amount })
end, {
  name = "cards", key = "subject", ttl = "4d", from = "beginning",
  windows = {
    h1 = { sliding = "1h", value = "data.amount", aggregates = { "count", "sum" } },
    d1 = { sliding = "24h", value = "data.amount", aggregates = { "count", "sum", "mean" } },
    day = { tumbling = "1d", value = "data.amount", aggregates = { "count", "sum", "max" } },
  },
  on_close = function(card, name, a, st)
    -- a daily summary of the busiest cards
    if name == "day" and a.count >= 8 then
      alert("busy_day", card, { day = (a.start - DAY0) // DAY + 1, count = a.count,
                                sum = cents(a.sum), max = a.max, lifetime = st.n })
    end
  end,
  timers = {
    quiet = function(card, data, st)
      alert("dormant", card, { last = data.last, amount = data.amount, seen = st.n })
    end,
  },
})

-- Per terminal (keyed by data.terminal): a busy terminal, seven
-- transactions from several cards within 24 hours.
tide.on("card.transaction", function(ev, st, terminal)
  counts.terminals = counts.terminals + 1
  st.n = (st.n or 0) + 1
  st.last = ev.id
  local d1 = tide.window("d1")
  if d1.count == 7 then
    alert("terminal_busy", terminal, { count = d1.count, cards = d1.distinct,
                                       max = d1.max, lifetime = st.n,
                                       seen = counts.cards })
  end
end, {
  name = "terminals", key = "data.terminal", ttl = "2d", from = "beginning",
  windows = {
    d1 = { sliding = "24h", value = "data.amount", distinct = "subject",
           aggregates = { "count", "distinct", "max" } },
  },
})

-- Card testing: a small amount (under 10), then a large one (over 100)
-- within an hour.  (Tighter bounds, under 5 then over 200 within 10
-- minutes, match nothing in the first week of the simulation.)
pattern.sequence{
  name = "card_testing", within = "1h", from = "beginning", ttl = "1d",
  steps = {
    { type = "card.transaction", where = function(ev) return ev.data.amount < 10 end },
    { type = "card.transaction", where = function(ev) return ev.data.amount > 100 end },
  },
  emit = function(card, events)
    return { type = "fraud.alert", subject = card,
             data = { rule = "card_testing", small = events[1].id, large = events[2].id } }
  end,
}

-- Per sensor series: the z-score of each reading against the 50 before it
-- (their mean and standard deviation kept in the key's state from the
-- previous reading's look at the count window).
tide.on("sensor.reading", function(ev, st, series)
  local v = ev.data.value
  if st.count == 50 then
    local z = tide.stats.zscore(v, st.mean, st.sd)
    if z ~= nil and math.abs(z) > 4 then
      tide.emit{ type = "sensor.anomaly", subject = series,
                 data = { rule = "zscore", id = ev.id, value = v, z = cents(z),
                          mean = cents(st.mean), sd = cents(st.sd) } }
    end
  end
  local w = tide.window("last50")
  st.count, st.mean, st.sd = w.count, w.mean, w.stddev
end, {
  name = "sensors", key = "subject", ttl = "1d", from = "beginning",
  windows = {
    last50 = { last = 50, value = "data.value", aggregates = { "count", "mean", "stddev" } },
  },
})
