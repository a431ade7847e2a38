#!/bin/sh
# Sensor readings through the IoT pack (rules/iot): a sensor over its high
# mark, one that falls silent, one stuck, a spike, a jump.
here=$(cd "$(dirname "$0")" && pwd)
exec "$here/../packs.sh" iot "$here/events.ndjson" sensor.anomaly
