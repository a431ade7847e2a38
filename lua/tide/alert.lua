-- tide.alert: the alerts of the rule packs (rules/README.md).
--
--   local alert = require "tide.alert"
--   alert.fraud("fraud.amount", 0.8, { amount = 1200, limit = 1000 })
--   alert.sensor("iot.zscore", 0.97, { value = 81.5, z = 4.2 })
--
-- Inside a handler: emits `fraud.alert` (or `sensor.anomaly`) for the
-- event in hand's subject, with data = { rule, score, ...evidence }.  The
-- score is clamped to [0, 1]; the alert's cause is the event in hand
-- (its causationid), so a backtest scores it against that event.

local tide = require "tide"

local alert = {}

local function clamp(x)
  if x ~= x or x < 0 then return 0 end
  if x > 1 then return 1 end
  return x
end

local function emit(kind, rule, score, evidence, subject)
  local data = {}
  for k, v in pairs(evidence or {}) do data[k] = v end
  data.rule = rule
  data.score = clamp(score)
  return tide.emit{ type = kind, subject = subject, data = data }
end

--- A fraud.alert of rule `rule` with `score` in [0, 1] and `evidence`.
function alert.fraud(rule, score, evidence, subject)
  return emit("fraud.alert", rule, score, evidence, subject)
end

--- A sensor.anomaly of rule `rule`.
function alert.sensor(rule, score, evidence, subject)
  return emit("sensor.anomaly", rule, score, evidence, subject)
end

return alert
