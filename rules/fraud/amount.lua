-- fraud.amount: a card transaction over an amount.
--
-- Parameters (tide.param, --set in tide backtest and tide test):
--   amount.limit   1000     alert above this amount
--
-- Score: how far over the limit, 0 at the limit, 0.5 at twice it, toward 1
-- beyond (1 - limit / amount).  Input: card.transaction with data.amount
-- (rules/README.md); transactions without a numeric amount are skipped.

local tide = require "tide"
local alert = require "tide.alert"

local LIMIT = tide.param("amount.limit", 1000)

tide.on("card.transaction", function(ev)
  local amount = tonumber(ev.data and ev.data.amount)
  if amount and amount > LIMIT then
    alert.fraud("fraud.amount", 1 - LIMIT / amount,
                { amount = amount, limit = LIMIT }, ev.subject)
  end
end, { name = "fraud.amount", from = "beginning" })
