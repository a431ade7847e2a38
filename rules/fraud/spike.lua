-- fraud.spike: an amount far above what the card usually spends, against
-- the card's running profile (Welford's mean and deviation of its past
-- amounts, kept in the rule's state).
--
-- Parameters:
--   spike.z             4     alert at this many deviations above the mean
--   spike.min_history   10    only for cards with this many transactions seen
--   spike.min_amount    50    and amounts at least this
--
-- Score: the normal CDF of the z-score, stretched from z to 2z (0 at z,
-- ~1 at twice z).  The transaction then joins the profile.

local tide = require "tide"
local alert = require "tide.alert"
local stats = tide.stats

local Z = tide.param("spike.z", 4)
local MIN_HISTORY = tide.param("spike.min_history", 10)
local MIN_AMOUNT = tide.param("spike.min_amount", 50)

tide.on("card.transaction", function(ev, st, card)
  if not st then return end -- no key: not for this rule
  local amount = tonumber(ev.data and ev.data.amount)
  if not amount then return end
  st.profile = st.profile or {}
  local p = st.profile
  if (p.n or 0) >= MIN_HISTORY and amount >= MIN_AMOUNT then
    local sd = stats.welford_sd(p)
    local z = sd > 0 and (amount - p.mean) / sd or math.huge
    if z >= Z then
      alert.fraud("fraud.spike", math.min(1, (z - Z) / Z),
                  { amount = amount, mean = p.mean, sd = sd,
                    z = z ~= math.huge and z or nil }, card)
    end
  end
  stats.welford(p, amount)
end, { name = "fraud.spike", key = "subject", ttl = "90d", from = "beginning" })
