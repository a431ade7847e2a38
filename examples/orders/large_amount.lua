-- Fraud rule: flag a single card payment above a threshold.
--
-- Emits `fraud.alert` for every `card.payment` whose amount exceeds
-- LIMIT, with the card as the subject so alerts group per card.  The
-- amount field and the limit are parameters at the top of the file.
--
-- Input event (data):  { card = "4111...", amount = 1234.5, merchant = "m-7" }
-- Output event (data): { rule = "large_amount", amount = ..., limit = ..., merchant = ... }

local tide = require "tide"
local path = require "tide.path"

local LIMIT = 1000          -- in the currency of the amount field
local AMOUNT = path.getter("data.amount")

tide.on("card.payment", function(ev)
  local amount = tonumber(AMOUNT(ev))
  if amount and amount > LIMIT then
    tide.emit{
      type = "fraud.alert",
      subject = ev.subject,
      data = { rule = "large_amount", amount = amount, limit = LIMIT,
               merchant = ev.data.merchant, payment = ev.id },
    }
  end
end, { name = "fraud.large_amount", from = "end" })
