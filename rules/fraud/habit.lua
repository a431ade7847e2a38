-- fraud.habit: an amount several times what the card usually spends, with
-- a lower bar for a card that confirmed frauds (the delayed chargeback
-- stream) show to be in a thief's hands.
--
-- The card's usual amount is the mean of its last amounts that were not
-- out of line themselves (an amount `habit.keep` times the usual one or
-- more is left out, so a run of stolen-card spending does not become the
-- habit it is measured against).  A card.fraud_confirmed event of the card
-- marks it compromised for `habit.for` from the confirmation's time: its
-- amounts are then held to `habit.ratio_confirmed` instead of
-- `habit.ratio`.  Unlike fraud.spike (a z-score over every past amount),
-- the yardstick is a ratio, which needs fewer past amounts to be steady
-- and is not thrown off by the frauds themselves.
--
-- Parameters:
--   habit.ratio             4      alert at this many times the usual amount
--   habit.ratio_confirmed   2      the same for a card with a recent confirmed fraud
--   habit.for               "14d"  how long a confirmed fraud marks the card
--   habit.min_history       5      usual amounts needed before any alert
--   habit.history           30     usual amounts kept (the last ones)
--   habit.keep              2.5    amounts this many times the usual one or
--                                  more are not added to it
--
-- Score: 0 at the ratio in force, 0.5 at twice it, toward 1 beyond
-- (1 - ratio in force / ratio).  Input: card.transaction with data.amount,
-- card.fraud_confirmed (rules/README.md); the label of a transaction is
-- never read.

local tide = require "tide"
local alert = require "tide.alert"

local RATIO = tide.param("habit.ratio", 4)
local RATIO_CONFIRMED = tide.param("habit.ratio_confirmed", 2)
local FOR = tide.duration(tide.param("habit.for", "14d"))
local MIN_HISTORY = tide.param("habit.min_history", 5)
local HISTORY = tide.param("habit.history", 30)
local KEEP = tide.param("habit.keep", 2.5)
local RATIO_REPEAT = tide.param("habit.ratio_repeat", RATIO)

tide.on("card.*", function(ev, st, card)
  if not st then return end -- no key: not for this rule
  local now = ev.time_ns
  if ev.type == "card.fraud_confirmed" then
    st.compromised = math.max(st.compromised or 0, now + FOR)
    return
  end
  if ev.type ~= "card.transaction" then return end
  local amount = tonumber(ev.data and ev.data.amount)
  if not amount then return end
  if st.compromised and now > st.compromised then st.compromised = nil end
  if st.suspect and now > st.suspect then st.suspect = nil end
  local past = st.amounts or {}
  local ratio
  if #past >= MIN_HISTORY then
    local sum = 0
    for _, a in ipairs(past) do sum = sum + a end
    local usual = sum / #past
    ratio = usual > 0 and amount / usual or math.huge
    local bar = st.compromised and RATIO_CONFIRMED
                or st.suspect and math.min(RATIO_REPEAT, RATIO) or RATIO
    if ratio >= bar then
      st.suspect = now + FOR
      alert.fraud("fraud.habit", 1 - bar / ratio,
                  { amount = amount, usual = usual,
                    ratio = ratio ~= math.huge and ratio or nil,
                    compromised = st.compromised and true or nil }, card)
    end
  end
  -- the amount joins the habit unless it was out of line
  if not ratio or ratio < KEEP then
    past[#past + 1] = amount
    if #past > HISTORY then table.remove(past, 1) end
    st.amounts = past
  end
end, { name = "fraud.habit", key = "subject", ttl = "90d", from = "beginning" })
