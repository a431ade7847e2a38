-- tide test -s rules/fraud/card_testing.lua rules/fraud/tests/card_testing
-- The same rule as cases.ndjson, in Lua: events made in loops, checks on
-- the alert, its cause and the state the rule keeps.

local T0 = "2026-01-01T10:00:00Z"

-- a transaction of @card, @minute minutes after T0; its id
local function tx(t, card, minute, amount)
  return t:send{ type = "card.transaction", subject = card,
                 time = t.at(T0, 60 * minute), data = { amount = amount } }
end

test("three small amounts then a large one raise one alert", function(t)
  for m = 1, 3 do tx(t, "c1", m, 1) end
  local large = tx(t, "c1", 10, 500)
  t:expect({ { type = "fraud.alert", subject = "c1" } })
  local a = t:emitted("fraud.alert")[1]
  t:has(a.data, { rule = "fraud.card_testing", amount = 500, tests = 3 })
  t:eq(a.causationid, large, "the alert's cause")
  t:eq(t:rule("fraud.card_testing", "c1"), nil, "the tests are forgotten")
end)

test("tests too far apart from the large one raise nothing", function(t)
  tx(t, "c2", 0, 1)
  tx(t, "c2", 1, 2)
  tx(t, "c2", 45, 1)
  tx(t, "c2", 50, 900)
  t:eq(#t:emitted("fraud.*"), 0)
  t:eq(#t:rule("fraud.card_testing", "c2").tests, 1, "the test still in reach")
end)

test("the number of tests needed is a parameter", function(t)
  t:set("card_testing.tests", 2)
  tx(t, "c3", 1, 1)
  tx(t, "c3", 2, 1)
  tx(t, "c3", 3, 300)
  t:eq(#t:emitted("fraud.alert"), 1)
  t:set("card_testing.tests", 3)
  t:eq(#t:emitted("fraud.alert"), 0, "with three needed")
end)

test("more tests, a higher score", function(t)
  for m = 1, 5 do tx(t, "c4", m, 1) end
  tx(t, "c4", 6, 250)
  local score = t:emitted("fraud.alert")[1].data.score
  t:ok(score > 0.8 and score <= 1, "score " .. score)
end)
