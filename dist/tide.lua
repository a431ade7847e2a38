-- /etc/tide/tide.lua - the configuration tide.service starts the engine
-- with (`tide run --help` and the README list every setting).  Paths of
-- scripts are relative to this file.  The data directory is given by the
-- unit (--data /var/lib/tide).

durability = "sync"            -- fsync each commit before acknowledging
-- The nanomsg endpoints default to ipc:// sockets inside the data
-- directory, reachable by the service's user only.  For other users or
-- machines, name them (bind 127.0.0.1 unless the network is trusted):
-- endpoints = { pull = "tcp://127.0.0.1:5550", rep = "tcp://127.0.0.1:5551",
--               pub = "tcp://127.0.0.1:5552" }

-- HTTP: CloudEvents in, /events/stream, /projections, /metrics, /healthz.
http = "127.0.0.1:8686"
-- http_token = "a long random string"   -- required by POST /events then

-- Scripts: consumers, rules and projections.
-- scripts = { "handlers.lua" }

max_event_size = "1M"
max_message_size = "16M"
time_limit = "5s"              -- per handler call
memory_limit = "256M"          -- the scripts' Lua state
