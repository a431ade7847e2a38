-- Used by tests/test_engine.c and tests/test_cli.c: every "in.x" event gets
-- exactly one "out.x" child (same subject), so a test can prove that each
-- input was handled exactly once.
local tide = require "tide"

tide.on("in.x", function(ev)
  tide.emit{ type = "out.x", subject = ev.subject, data = { cause = ev.id } }
end, { name = "mirror", from = "beginning" })
