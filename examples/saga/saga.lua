-- An order saga: reserve the items, then take the payment, then confirm;
-- undo what was done when a step fails, and give up when a service does
-- not answer in time.  One rule keyed by the order: its state is where the
-- order stands, durable across restarts, and a timer on event time is the
-- deadline.
--
--   order.placed        -> inventory.reserve       (a command to the stock service)
--   inventory.reserved  -> payment.request         (a command to the payment service)
--   inventory.failed    -> order.cancelled         (nothing to undo)
--   payment.captured    -> order.confirmed
--   payment.failed      -> inventory.release, order.cancelled   (compensation)
--   no answer in time   -> inventory.release (if reserved), order.cancelled
--
-- Parameters: saga.timeout ("10m") for the whole saga.

local tide = require "tide"

local TIMEOUT = tide.param("saga.timeout", "10m")

local function cancel(order, st, reason)
  if st.reserved then
    tide.emit{ type = "inventory.release", subject = order, data = { items = st.items } }
  end
  tide.emit{ type = "order.cancelled", subject = order, data = { reason = reason } }
  tide.timer.cancel("deadline")
  return tide.delete
end

tide.on("*", function(ev, st, order)
  if not st then return end -- no order: not for the saga
  local t = ev.type
  if t == "order.placed" then
    st.items, st.amount, st.card = ev.data.items, ev.data.amount, ev.data.card
    tide.emit{ type = "inventory.reserve", subject = order, data = { items = st.items } }
    tide.timer.after("deadline", TIMEOUT)
  elseif st.items == nil then
    return -- an answer for an order the saga does not know (any more)
  elseif t == "inventory.reserved" then
    st.reserved = true
    tide.emit{ type = "payment.request", subject = order,
               data = { amount = st.amount, card = st.card } }
  elseif t == "inventory.failed" then
    return cancel(order, st, "out of stock")
  elseif t == "payment.captured" then
    tide.emit{ type = "order.confirmed", subject = order, data = { amount = st.amount } }
    tide.timer.cancel("deadline")
    return tide.delete
  elseif t == "payment.failed" then
    return cancel(order, st, "payment failed: " .. tostring(ev.data.reason))
  end
end, { name = "order.saga", key = "subject", from = "beginning",
       timers = { deadline = function(order, data, st)
         return cancel(order, st, "no answer within " .. TIMEOUT)
       end } })
