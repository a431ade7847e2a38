-- fraud.card_testing: a card tried with several small amounts, then used
-- for a large one within a short time (thieves test a stolen card first).
--
-- Parameters:
--   card_testing.small    5      an amount at most this is a test
--   card_testing.tests    3      tests needed before the large one
--   card_testing.large    200    an amount at least this is the large one
--   card_testing.within   "30m"  tests and the large one within this time
--
-- Score: 0.5 at the number of tests needed, toward 1 with more.

local tide = require "tide"
local alert = require "tide.alert"

local SMALL = tide.param("card_testing.small", 5)
local TESTS = tide.param("card_testing.tests", 3)
local LARGE = tide.param("card_testing.large", 200)
local WITHIN = tide.duration(tide.param("card_testing.within", "30m"))

tide.on("card.transaction", function(ev, st, card)
  if not st then return end -- no key: not for this rule
  local amount = tonumber(ev.data and ev.data.amount)
  if not amount then return end
  local now = ev.time_ns
  -- the tests still within reach
  local kept = {}
  for _, t in ipairs(st.tests or {}) do
    if now - t <= WITHIN then kept[#kept + 1] = t end
  end
  if amount <= SMALL then
    kept[#kept + 1] = now
  elseif amount >= LARGE and #kept >= TESTS then
    alert.fraud("fraud.card_testing", 1 - 0.5 ^ (#kept - TESTS + 1),
                { amount = amount, tests = #kept }, card)
    kept = {}
  end
  st.tests = kept
  if #kept == 0 then return tide.delete end
end, { name = "fraud.card_testing", key = "subject", ttl = "1d", from = "beginning" })
