-- fraud.terminal: transactions at a terminal that confirmed frauds show to
-- be compromised, learnt from the delayed stream of confirmed frauds
-- (chargebacks).
--
-- A card.fraud_confirmed event with data.terminal counts its card against
-- that terminal.  Once frauds of `terminal.min` different cards have been
-- confirmed there, the terminal is compromised for `terminal.for` from
-- that confirmation, and every card.transaction there raises an alert.
-- Counting cards rather than confirmations keeps one stolen card that
-- happened to be used twice at a shop from condemning the shop.
--
-- A single card is enough when its confirmed fraud was an ordinary amount
-- for the terminal (at most `terminal.ordinary` times the median of the
-- terminal's last `terminal.history` amounts): a thief with a stolen card
-- spends large amounts wherever he is, while a skimmed terminal's frauds
-- look like its other sales.  The rule remembers the terminal's last
-- transactions (id and amount) for this; a confirmation of one it no
-- longer remembers only counts its card.
--
-- With `terminal.by` = "merchant" the same is learnt of merchants: both
-- kinds of event are then counted by data.merchant (a confirmation must
-- carry the merchant of its transaction), for compromises of a merchant's
-- systems rather than of one of its terminals.
--
-- The period is not stretched by the confirmations that keep coming in
-- during it: they are of frauds from the same compromise, confirmed late.
-- Nor do the stragglers arriving just after it start a new one: the cards
-- are counted afresh only once the period is `terminal.for` behind.
--
-- Parameters:
--   terminal.for        "28d"  how long a terminal stays compromised
--   terminal.min        1      cards with confirmed frauds there before it counts
--   terminal.ordinary   0      one card is enough if its fraud was at most this
--                              many times the terminal's median amount (0: off)
--   terminal.history    30     transactions remembered per terminal
--   terminal.by         "terminal"  or "merchant": the data field learnt of
--
-- Score: 0.5 for one card, toward 1 with more (1 - 0.5^cards).

local tide = require "tide"
local alert = require "tide.alert"

local FOR = tide.duration(tide.param("terminal.for", "28d"))
local MIN = tide.param("terminal.min", 1)
local ORDINARY = tide.param("terminal.ordinary", 0)
local HISTORY = tide.param("terminal.history", 30)
local BY = tide.param("terminal.by", "terminal")
if BY ~= "terminal" and BY ~= "merchant" then
  error("terminal.by must be \"terminal\" or \"merchant\", not '" .. tostring(BY) .. "'")
end

-- was the confirmed transaction an ordinary amount for this terminal?
local function ordinary(st, id)
  if ORDINARY <= 0 or not st.recent or not id then return false end
  local amounts, amount = {}, nil
  for _, tx in ipairs(st.recent) do
    amounts[#amounts + 1] = tx[2]
    if tx[1] == id then amount = tx[2] end
  end
  return amount ~= nil and amount <= ORDINARY * tide.stats.median(amounts)
end

tide.on("card.*", function(ev, st, where)
  if not st then return end -- no key: not for this rule
  local now = ev.time_ns
  if ev.type == "card.fraud_confirmed" then
    if st["until"] and now > st["until"] + FOR then
      -- long over: a new compromise, counted from nothing
      st.cards, st.n, st.frauds, st.since, st["until"] = nil, nil, nil, nil, nil
    end
    st.frauds = (st.frauds or 0) + 1
    st.cards = st.cards or {}
    if ev.subject and not st.cards[ev.subject] then
      st.cards[ev.subject] = true
      st.n = (st.n or 0) + 1
    end
    if not st.since and ((st.n or 0) >= MIN
                         or ordinary(st, ev.data and ev.data.transaction)) then
      st.since, st["until"] = now, now + FOR
    end
  elseif ev.type == "card.transaction" then
    if st.since and now >= st.since and now <= st["until"] then
      alert.fraud("fraud.terminal", 1 - 0.5 ^ st.n,
                  { [BY] = where, cards = st.n, confirmed = st.frauds }, ev.subject)
    end
    local amount = tonumber(ev.data and ev.data.amount)
    if ORDINARY > 0 and amount and ev.id then
      st.recent = st.recent or {}
      st.recent[#st.recent + 1] = { ev.id, amount }
      if #st.recent > HISTORY then table.remove(st.recent, 1) end
    end
  end
end, { name = "fraud.terminal", key = "data." .. BY, ttl = "120d", from = "beginning" })
