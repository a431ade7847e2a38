-- tide.path: read nested fields of an event by a dotted path.
--
--   local path = require "tide.path"
--   path.get(ev, "data.card.country")        --> value, or nil if any step is missing
--   path.get(ev, "data.items.1.sku")         --> array elements by 1-based index
--   local amount = path.getter("data.amount") --> a compiled accessor: amount(ev)
--
-- Rules that take the field to inspect as a parameter use this instead of
-- hard-coding ev.data.x, and never fail on events that lack the field.

local path = {}

local function split(p)
  assert(type(p) == "string" and p ~= "", "path must be a non-empty string")
  local steps = {}
  for step in p:gmatch("[^.]+") do
    steps[#steps + 1] = tonumber(step) and math.tointeger(tonumber(step)) or step
  end
  return steps
end

-- Events reach handlers as read-only views (userdata named "tide.event");
-- they index like tables.
local function indexable(v)
  return type(v) == "table" or getmetatable(v) == "tide.event"
end

local function walk(v, steps)
  for i = 1, #steps do
    if not indexable(v) then return nil end
    v = v[steps[i]]
  end
  return v
end

--- Value at dotted path `p` in table `t`, or nil.
function path.get(t, p)
  return walk(t, split(p))
end

--- A function(t) that returns the value at `p`; splits the path once.
function path.getter(p)
  local steps = split(p)
  return function(t) return walk(t, steps) end
end

return path
