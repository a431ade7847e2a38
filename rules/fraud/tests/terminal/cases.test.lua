-- tide test -s rules/fraud/terminal.lua rules/fraud/tests/terminal
-- fraud.terminal in Lua: cards counted rather than confirmations, one
-- period per compromise, and a single card enough when its fraud was an
-- ordinary amount for the terminal.

local T0 = "2026-01-01T10:00:00Z"

-- a transaction of @card at @terminal, @hours after T0; its id
local function tx(t, card, terminal, hours, amount)
  return t:send{ type = "card.transaction", subject = card,
                 time = t.at(T0, 3600 * hours),
                 data = { amount = amount or 30, terminal = terminal } }
end

-- the confirmation of transaction @id of @card at @terminal, @hours after T0
local function confirm(t, card, terminal, hours, id)
  t:send{ type = "card.fraud_confirmed", subject = card, time = t.at(T0, 3600 * hours),
          data = { transaction = id, terminal = terminal } }
end

test("terminal.min counts cards: one card's two frauds are not two", function(t)
  t:set("terminal.min", 2)
  local a = tx(t, "c1", "T1", 0)
  local b = tx(t, "c1", "T1", 1)
  confirm(t, "c1", "T1", 168, a)
  confirm(t, "c1", "T1", 169, b)
  tx(t, "c2", "T1", 170)
  t:eq(#t:emitted("fraud.alert"), 0, "one card")
  local c = tx(t, "c3", "T1", 2)
  confirm(t, "c3", "T1", 171, c)
  tx(t, "c4", "T1", 172)
  t:expect({ { type = "fraud.alert", subject = "c4" } })
  t:has(t:emitted("fraud.alert")[1].data, { cards = 2, confirmed = 3, score = 0.75 })
end)

test("later confirmations do not stretch the period; stragglers do not restart it", function(t)
  t:set("terminal.for", "10d")
  local a = tx(t, "c1", "T2", 0)
  confirm(t, "c1", "T2", 24, a)   -- compromised from day 1 to day 11
  confirm(t, "c2", "T2", 240, a)  -- day 10
  tx(t, "c3", "T2", 250)          -- day 10.4: in
  tx(t, "c4", "T2", 24 * 12)      -- day 12: over
  confirm(t, "c5", "T2", 24 * 13, a) -- a straggler, day 13
  tx(t, "c6", "T2", 24 * 14)      -- day 14: still over
  t:eq(#t:emitted("fraud.alert"), 1)
  t:eq(t:emitted("fraud.alert")[1].subject, "c3")
  confirm(t, "c7", "T2", 24 * 25, a) -- day 25: a new compromise
  tx(t, "c8", "T2", 24 * 26)
  t:eq(#t:emitted("fraud.alert"), 2)
  t:has(t:emitted("fraud.alert")[2].data, { cards = 1, confirmed = 1 })
end)

test("terminal.ordinary: one card is enough if its fraud was an ordinary amount there", function(t)
  t:set("terminal.min", 2)
  t:set("terminal.ordinary", 1)
  for h = 0, 4 do tx(t, "c" .. h, "T3", h, 40 + h) end -- amounts about 40 there
  local usual = tx(t, "c9", "T3", 5, 35)
  for h = 0, 4 do tx(t, "d" .. h, "T4", 6 + h, 40 + h) end -- (in time order)
  local large = tx(t, "d9", "T4", 11, 400)
  for h = 12, 14 do tx(t, "e" .. h, "T3", h, 40) end
  confirm(t, "c9", "T3", 170, usual)
  confirm(t, "d9", "T4", 170, large)
  tx(t, "x1", "T3", 171)
  tx(t, "x2", "T4", 171)
  t:expect({ { type = "fraud.alert", subject = "x1" } })
  t:eq(#t:rule("fraud.terminal", "T3").recent, 10, "the transactions remembered")
  t:set("terminal.history", 3)
  t:eq(#t:emitted("fraud.alert"), 0, "35 pushed out by the three after it: only one card")
end)

test("terminal.by = merchant learns of merchants across their terminals", function(t)
  t:set("terminal.by", "merchant")
  local function sale(card, merchant, terminal, hours)
    return t:send{ type = "card.transaction", subject = card, time = t.at(T0, 3600 * hours),
                   data = { amount = 30, merchant = merchant, terminal = terminal } }
  end
  local a = sale("c1", "M1", "T7", 0)
  t:send{ type = "card.fraud_confirmed", subject = "c1", time = t.at(T0, 3600 * 168),
          data = { transaction = a, terminal = "T7", merchant = "M1" } }
  sale("c2", "M1", "T8", 170) -- another terminal of the same merchant
  sale("c3", "M2", "T7", 171) -- another merchant
  t:expect({ { type = "fraud.alert", subject = "c2" } })
  t:has(t:emitted("fraud.alert")[1].data, { merchant = "M1", cards = 1 })
end)
