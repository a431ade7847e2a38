-- tide test -s rules/fraud/habit.lua rules/fraud/tests/habit
-- fraud.habit in Lua: the bars in force after a confirmation and after the
-- rule's own alert, and what joins the card's usual amount.

local T0 = "2026-01-01T10:00:00Z"

-- a transaction of @card, @hours after T0; its id
local function tx(t, card, hours, amount)
  return t:send{ type = "card.transaction", subject = card,
                 time = t.at(T0, 3600 * hours), data = { amount = amount } }
end

-- five days of a card spending about 20
local function usual(t, card)
  for d = 0, 4 do tx(t, card, 24 * d, 18 + d) end
end

test("an amount four times the usual one raises an alert, and stays out of it", function(t)
  usual(t, "c1")
  local big = tx(t, "c1", 120, 80)
  t:expect({ { type = "fraud.alert", subject = "c1" } })
  local a = t:emitted("fraud.alert")[1]
  t:has(a.data, { rule = "fraud.habit", amount = 80, usual = 20, ratio = 4 })
  t:eq(a.causationid, big, "the alert's cause")
  t:eq(#t:rule("fraud.habit", "c1").amounts, 5, "80 is not part of the habit")
end)

test("after a confirmed fraud of the card, a lower bar, for habit.for", function(t)
  usual(t, "c2")
  t:send{ type = "card.fraud_confirmed", subject = "c2", time = t.at(T0, 3600 * 100),
          data = { transaction = "tx-old" } }
  tx(t, "c2", 110, 50)           -- 2.5 times: over the bar of 2
  tx(t, "c2", 100 + 24 * 15, 50) -- 15 days on: the bar is 4 again
  t:eq(#t:emitted("fraud.alert"), 1)
  t:has(t:emitted("fraud.alert")[1].data, { compromised = true, amount = 50 })
  t:eq(t:rule("fraud.habit", "c2").compromised, nil, "forgotten once over")
end)

test("habit.ratio_repeat: a lower bar after the rule's own alert", function(t)
  usual(t, "c3")
  tx(t, "c3", 120, 100) -- 5 times
  tx(t, "c3", 130, 65)  -- 3.25 times
  t:eq(#t:emitted("fraud.alert"), 1, "by default the bar stays at 4")
  t:set("habit.ratio_repeat", 3)
  t:eq(#t:emitted("fraud.alert"), 2, "with 3 after an alert")
end)

test("no alert before habit.min_history amounts", function(t)
  for d = 0, 3 do tx(t, "c4", 24 * d, 20) end
  tx(t, "c4", 100, 500)
  t:eq(#t:emitted("fraud.alert"), 0)
  t:set("habit.min_history", 4)
  t:eq(#t:emitted("fraud.alert"), 1, "with four enough")
end)

test("only the last habit.history amounts make the habit", function(t)
  t:set("habit.history", 5)
  for d = 0, 9 do tx(t, "c5", 24 * d, d < 5 and 100 or 20) end
  tx(t, "c5", 240, 90) -- 4.5 times the last five, under the first ten's mean
  t:eq(#t:emitted("fraud.alert"), 1)
  t:eq(t:rule("fraud.habit", "c5").amounts, { 20, 20, 20, 20, 20 })
end)
