-- Config for the order-flow example: `tide run --config examples/orders/tide.lua`.
-- Paths are relative to this file.

data = "tide-data"            -- overridden by --data in run.sh
durability = "sync"           -- fsync every commit before acknowledging
scripts = {
  "orders.lua",                          -- order -> payment -> shipment saga
  "large_amount.lua",                    -- fraud alert on big payments
}
