-- fraud.velocity: too many transactions, or too much spent, by one card in
-- a sliding window of event time.
--
-- Parameters:
--   velocity.window      "1h"   the window
--   velocity.max_count   5      alert above this many transactions in it
--   velocity.max_sum     5000   or above this total amount in it
--
-- Score: the larger of count / (2 max_count) and sum / (2 max_sum).  One
-- alert per transaction over a limit; a card's state is forgotten after 30
-- days without transactions.

local tide = require "tide"
local alert = require "tide.alert"

local WINDOW = tide.param("velocity.window", "1h")
local MAX_COUNT = tide.param("velocity.max_count", 5)
local MAX_SUM = tide.param("velocity.max_sum", 5000)

tide.on("card.transaction", function(ev, st, card)
  if not st then return end -- no key: not for this rule
  local w = tide.window("recent")
  if w.count > MAX_COUNT or w.sum > MAX_SUM then
    alert.fraud("fraud.velocity",
                math.max(w.count / (2 * MAX_COUNT), w.sum / (2 * MAX_SUM)),
                { count = w.count, sum = w.sum, window = WINDOW }, card)
  end
end, { name = "fraud.velocity", key = "subject", ttl = "30d", from = "beginning",
       windows = { recent = { sliding = WINDOW, value = "data.amount",
                              aggregates = { "count", "sum" } } } })
