-- Used by tests/test_crash.c beside a copy of mirror.lua: two projections
-- over the crash suite's traffic, which the suite compares after every
-- kill with what the log holds up to each projection's stored position.
-- The suite rewrites the consumer's script before some reloads, never
-- this one: the text of the file that defines a projection is part of its
-- definition, and a change would rebuild both.
local tide = require "tide"

-- Keyed by the subject (found in C): the inputs and the children of the
-- stream, its last version and the highest seq applied.  Every event of
-- the stream is applied once, so ver = ins + outs.
local function seen(s, ev)
  s.ver = ev.version
  if ev.seq > s.top then s.top = ev.seq end
end

tide.projection("by_subject", {
  init = function() return { ins = 0, outs = 0, top = 0, ver = 0 } end,
  on = {
    ["in.x"] = function(s, ev) s.ins = s.ins + 1; seen(s, ev) end,
    ["out.x"] = function(s, ev) s.outs = s.outs + 1; seen(s, ev) end,
  },
})

-- Keyed by a field path (a number, so the key is its decimal text): the
-- inputs of a group, the sum of their "n" and the highest seq applied.
-- The children carry no data.g and are skipped.
tide.projection("by_group", {
  key = "data.g",
  init = function() return { count = 0, sum = 0, top = 0 } end,
  on = {
    ["in.x"] = function(s, ev)
      s.count = s.count + 1
      s.sum = s.sum + ev.data.n
      if ev.seq > s.top then s.top = ev.seq end
    end,
  },
})
