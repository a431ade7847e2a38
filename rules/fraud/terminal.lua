-- fraud.terminal: transactions at a terminal that confirmed frauds show to
-- be compromised, learnt from the delayed stream of confirmed frauds
-- (chargebacks).
--
-- A card.fraud_confirmed event with data.terminal marks that terminal
-- compromised for a while (from the confirmation's time); every later
-- card.transaction there raises an alert.
--
-- Parameters:
--   terminal.for       "28d"   how long a terminal stays compromised
--   terminal.min       1       confirmed frauds before it counts
--
-- Score: 0.5 for one confirmed fraud, toward 1 with more (1 - 0.5^n).

local tide = require "tide"
local alert = require "tide.alert"

local FOR = tide.duration(tide.param("terminal.for", "28d"))
local MIN = tide.param("terminal.min", 1)

tide.on("card.*", function(ev, st, terminal)
  if not st then return end -- no key: not for this rule
  if ev.type == "card.fraud_confirmed" then
    st.frauds = (st.frauds or 0) + 1
    st["until"] = ev.time_ns + FOR
  elseif ev.type == "card.transaction" and (st.frauds or 0) >= MIN
         and st["until"] and ev.time_ns <= st["until"] then
    alert.fraud("fraud.terminal", 1 - 0.5 ^ st.frauds,
                { terminal = terminal, confirmed = st.frauds }, ev.subject)
  end
end, { name = "fraud.terminal", key = "data.terminal", ttl = "120d", from = "beginning" })
