-- The order flow: each step reacts to an event and emits the next one.
--
--   order.placed ──▶ payment.requested ──▶ payment.captured ──▶ shipment.requested
--                                      └─▶ payment.declined ──▶ order.cancelled
--
-- Payments above the card's limit are declined; the fraud rule in
-- large_amount.lua (beside it) watches card.payment events on the side.

local tide = require "tide"

tide.on("order.placed", function(ev)
  local o = ev.data
  print(("order %s placed by %s: %d item(s), %.2f %s"):format(
    ev.subject, o.customer, #o.items, o.total, o.currency))
  tide.emit{ type = "payment.requested", subject = ev.subject,
             data = { customer = o.customer, amount = o.total, currency = o.currency,
                      card = o.card, limit = o.card_limit } }
end, { name = "orders.payments", from = "beginning" })

tide.on("payment.requested", function(ev)
  local p = ev.data
  -- the card network sees every payment attempt
  tide.emit{ type = "card.payment", subject = p.card,
             data = { amount = p.amount, merchant = "tide-shop", order = ev.subject } }
  if p.amount <= p.limit then
    tide.emit{ type = "payment.captured", subject = ev.subject, data = { amount = p.amount } }
  else
    tide.emit{ type = "payment.declined", subject = ev.subject,
               data = { amount = p.amount, reason = "over card limit" } }
  end
end, { name = "orders.bank", from = "beginning" })

tide.on("payment.*", function(ev)
  if ev.type == "payment.captured" then
    print(("payment captured for %s: %.2f"):format(ev.subject, ev.data.amount))
    tide.emit{ type = "shipment.requested", subject = ev.subject }
  elseif ev.type == "payment.declined" then
    print(("payment declined for %s: %s"):format(ev.subject, ev.data.reason))
    tide.emit{ type = "order.cancelled", subject = ev.subject,
               data = { reason = ev.data.reason } }
  end
end, { name = "orders.fulfilment", from = "beginning" })

tide.on("fraud.alert", function(ev)
  print(("ALERT %s: payment of %.2f at %s is over the %d limit"):format(
    ev.subject, ev.data.amount, ev.data.merchant, ev.data.limit))
end, { name = "orders.alerts", from = "beginning" })

-- Read models, kept up to date from the log and queried with `tide query`.
tide.projection("order_status", {             -- one state per order (its subject)
  init = function() return { status = "new" } end,
  on = {
    ["order.placed"]       = function(s, ev) s.status = "placed"; s.total = ev.data.total end,
    ["payment.captured"]   = function(s, ev) s.status = "paid" end,
    ["shipment.requested"] = function(s, ev) s.status = "shipping" end,
    ["order.cancelled"]    = function(s, ev) s.status = "cancelled"; s.reason = ev.data.reason end,
  },
})

tide.projection("customers", {
  key = "data.customer",                      -- a field path: no Lua call per event
  init = function() return { orders = 0, spent = 0 } end,
  on = {
    ["order.placed"] = function(s, ev)
      s.orders = s.orders + 1
      s.spent = s.spent + ev.data.total
    end,
  },
})
