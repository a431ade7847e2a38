-- iot.anomaly: the default anomaly detector.  It puts three questions to
-- every reading of a sensor, after a warm-up:
--
--   out of range   is the reading outside the range of all the sensor's
--                  earlier readings, by more than a margin (a fraction of
--                  that range)?  This catches spikes, drops and level
--                  shifts the first time they go where the sensor has
--                  never been.
--   unusual mix    do the last readings fall into the sensor's range in
--                  a proportion never seen before?  This is the relative
--                  entropy test of Wang et al. ("Statistical techniques
--                  for online anomaly detection in data centers", 2011):
--                  the histogram of the last `window` readings, over
--                  `bins` equal bins spanning the range so far, is
--                  compared with each histogram the sensor kept as
--                  "seen before"; 2 * window * KL(recent || kept) follows
--                  a chi-square law with bins - 1 degrees of freedom when
--                  they are the same, so the recent one is new when that
--                  passes the chi-square quantile at 1 - p for all of
--                  them.  A new histogram is kept (up to `dists`, the
--                  least matched giving way), so a change raises one
--                  alert and is then normal.  This catches a sensor that
--                  stays in its range but behaves differently: flat
--                  where it used to swing, swinging wider, a pattern
--                  that stops.
--   off its day    for a sensor whose readings follow a daily pattern,
--                  is the reading far from what it usually reads at
--                  this time of day?  The day is cut into `daily_slots`
--                  slots; each slot keeps a weighted mean of the
--                  readings that fell in it (each new one weighs 0.3),
--                  and the sensor keeps how far its readings usually
--                  are from their slot's mean and from its overall
--                  level (weighted means of those distances, each new
--                  reading weighing 0.01).  The pattern counts once the
--                  sensor has three days of history and its readings
--                  sit closer to their slots than `daily_fit` times
--                  their distance from the level: most sensors have no
--                  such day and never ask this.  A reading is then off
--                  its day when it is more than `daily` times the usual
--                  distance from its slot's mean.  This catches a daily
--                  cycle that changes shape while staying in its range.
--
-- Any answer raises an alert, then the sensor keeps quiet for a while
-- (one anomaly is one alert, as anomaly benchmarks such as NAB count
-- them).  The unusual mix answers only once the sensor has a longer history
-- (`learn` readings): before that, every few readings bring a mix not yet
-- kept, and a new sensor would raise false alerts.
--
-- Parameters:
--   detector.margin   0.1    out of range by more than this fraction of the range
--   detector.window   26     readings in the recent histogram
--   detector.bins     5      bins of the histograms
--   detector.p        0.01   significance of the chi-square test
--   detector.common   1      a histogram matched this many times or fewer is still unusual
--   detector.dists    40     histograms kept per sensor
--   detector.warmup   100    readings before it may alert
--   detector.learn    500    readings before the unusual mix may alert
--   detector.quiet    "16h"  no second alert for a sensor within this
--   detector.daily    8      off its day by more than this many usual distances (0: not asked)
--   detector.daily_fit 0.3   a daily pattern counts below this ratio of distances
--   detector.daily_slots 48  slots of the day
--
-- Chosen on NAB's artificialWithAnomaly and realAWSCloudwatch series (the
-- grid is in rules/README.md).
--
-- Score: out of range, 0.5 at the margin toward 1 at a whole range past
-- it; off its day, 0.5 at the limit toward 1 at twice it; unusual mix,
-- 0.5 at the quantile toward 1 at twice it.
--
-- The state per sensor: n readings, lo and hi (the range), buf (the last
-- `window` readings, a ring), dists (the kept histograms { p = { ... },
-- c = times matched }), last (the time of the last alert), and for the
-- daily pattern: since (the time of the first reading), slots (the
-- slots' means, by slot number from "1"), level, spread (the usual
-- distance from the level) and off (the usual distance from the slot).

local tide = require "tide"
local alert = require "tide.alert"
local stats = tide.stats

local MARGIN = tide.param("detector.margin", 0.1)
local W = tide.param("detector.window", 26)
local BINS = tide.param("detector.bins", 5)
local P = tide.param("detector.p", 0.01)
local COMMON = tide.param("detector.common", 1)
local DISTS = tide.param("detector.dists", 40)
local WARMUP = tide.param("detector.warmup", 100)
local LEARN = tide.param("detector.learn", 500)
local QUIET = tide.duration(tide.param("detector.quiet", "16h"))
local DAILY = tide.param("detector.daily", 8)
local DAILY_FIT = tide.param("detector.daily_fit", 0.3)
local SLOTS = tide.param("detector.daily_slots", 48)
local SLOT_W, USUAL_W = 0.3, 0.01 -- weights of a new reading (see above)
local DAY = 86400 * 1000000000
local HISTORY = 3 * DAY

-- the upper p quantile of the standard normal, by bisection on its cdf
local function normal_upper(p)
  local lo, hi = -10, 10
  for _ = 1, 100 do
    local mid = (lo + hi) / 2
    if 1 - stats.normal_cdf(mid) > p then lo = mid else hi = mid end
  end
  return (lo + hi) / 2
end

-- the chi-square quantile at 1 - P with BINS - 1 degrees of freedom
-- (Wilson and Hilferty's cube-root approximation)
local K = BINS - 1
local CHI = K * (1 - 2 / (9 * K) + normal_upper(P) * math.sqrt(2 / (9 * K))) ^ 3

local log, floor, huge = math.log, math.floor, math.huge
local TINY = 1e-6 -- stands for an empty bin of a kept histogram

-- the histogram of the readings in buf over [lo, hi], as proportions
local function histogram(buf, lo, hi)
  local h = {}
  for b = 1, BINS do h[b] = 0 end
  local span = hi - lo
  for k = 1, W do
    local b = 1
    if span > 0 then
      b = floor((buf[k] - lo) / span * BINS) + 1
      if b > BINS then b = BINS end
    end
    h[b] = h[b] + 1
  end
  for b = 1, BINS do h[b] = h[b] / W end
  return h
end

-- the relative entropy test: nil when the recent histogram is a usual
-- one, else its statistic against the closest kept one (huge if none)
local function unusual(st)
  local h = histogram(st.buf, st.lo, st.hi)
  local dists = st.dists
  local best, stat = nil, huge
  for d = 1, #dists do
    local q = dists[d].p
    local kl = 0
    for b = 1, BINS do
      local x = h[b]
      if x > 0 then
        local y = q[b]
        kl = kl + x * log(x / (y > TINY and y or TINY))
      end
    end
    if 2 * W * kl < stat then best, stat = d, 2 * W * kl end
  end
  if best and stat < CHI then
    local d = dists[best]
    d.c = d.c + 1
    return d.c <= COMMON and stat or nil
  end
  if #dists < DISTS then
    dists[#dists + 1] = { p = h, c = 1 }
  else -- full: the least matched gives way
    local least = 1
    for d = 2, #dists do
      if dists[d].c < dists[least].c then least = d end
    end
    dists[least] = { p = h, c = 1 }
  end
  return stat
end

-- off its day: nil, or how far the reading is from its slot's mean, the
-- limit it passed and that mean; learns the reading either way
local function off_day(st, v, t)
  st.since = st.since or t
  st.slots = st.slots or {}
  -- a string key: a table with holes is stored as a map of strings
  local slot = tostring((t % DAY) * SLOTS // DAY + 1)
  local level = st.level or v
  st.level = level + USUAL_W * (v - level)
  local spread = st.spread or math.abs(v - st.level)
  st.spread = spread + USUAL_W * (math.abs(v - st.level) - spread)
  local mean = st.slots[slot]
  if not mean then
    st.slots[slot] = v
    return nil
  end
  local dist, off = math.abs(v - mean), st.off
  st.off = off and off + USUAL_W * (dist - off) or dist
  st.slots[slot] = mean + SLOT_W * (v - mean)
  -- (a floor under the usual distance: a pattern repeated exactly does not
  -- make every rounding error an alert)
  local usual = off and math.max(off, 1e-9 * st.spread)
  if off and DAILY > 0 and t - st.since > HISTORY and st.spread > 0 and
      off / st.spread < DAILY_FIT and dist > DAILY * usual then
    return dist, DAILY * usual, mean
  end
  return nil
end

tide.on("sensor.reading", function(ev, st, sensor)
  if not st then return end -- no key: not for this rule
  local v = tonumber(ev.data and ev.data.value)
  if not v then return end
  local n = (st.n or 0) + 1
  st.n = n
  st.buf = st.buf or {}
  st.dists = st.dists or {}

  -- out of range, against the readings before this one
  local lo, hi = st.lo or v, st.hi or v
  local out = 0
  if v > hi then out = v - hi elseif v < lo then out = lo - v end
  local range = hi - lo
  local far = n > 1 and out > MARGIN * range

  st.lo, st.hi = math.min(lo, v), math.max(hi, v)
  st.buf[(n - 1) % W + 1] = v
  local stat = n >= W and unusual(st) or nil
  local dist, limit, usual
  if ev.time_ns then -- (a reading without a time has no time of day)
    dist, limit, usual = off_day(st, v, ev.time_ns)
  end

  if stat and n <= LEARN then stat = nil end
  if n > WARMUP and (far or dist or stat) and (not st.last or ev.time_ns - st.last >= QUIET) then
    st.last = ev.time_ns
    local score, evidence
    if far then
      score = range > 0 and math.min(1, (out - MARGIN * range) / range) or 1
      evidence = { value = v, test = "range", low = lo, high = hi }
    elseif dist then
      score = limit > 0 and math.min(1, (dist - limit) / limit) or 1
      evidence = { value = v, test = "daily", usual = usual, distance = dist, limit = limit }
    else
      score = stat == huge and 1 or math.min(1, (stat - CHI) / CHI)
      evidence = { value = v, test = "distribution", low = st.lo, high = st.hi,
                   chi2 = stat ~= huge and stat or nil, quantile = CHI }
    end
    alert.sensor("iot.anomaly", 0.5 + 0.5 * score, evidence, sensor)
  end
end, { name = "iot.anomaly", key = "subject", ttl = "30d", from = "beginning" })
