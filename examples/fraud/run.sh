#!/bin/sh
# Card transactions and confirmed frauds through the fraud pack
# (rules/fraud): the alerts each rule raises, on screen.
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../packs.sh" fraud "$here/events.ndjson" fraud.alert
