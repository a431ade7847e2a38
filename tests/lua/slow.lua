-- Used by tests/test_engine.c: a handler slow enough that a turn is still
-- running when the test sends SIGTERM.  The first event of the slow batch
-- announces itself in the daemon's log (print goes to the log at info).
local tide = require "tide"

tide.on("slow.x", function(ev)
  if ev.data and ev.data.first then
    print("slow batch started")
  end
  local x = 0
  for i = 1, 40000 do x = x + i % 7 end
  tide.emit{ type = "out.x", subject = ev.subject, data = { x = x } }
end, { name = "slow", from = "beginning" })

tide.on("in.x", function(ev)
  tide.emit{ type = "out.x", subject = ev.subject }
end, { name = "mirror", from = "beginning" })
