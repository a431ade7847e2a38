# nab2ndjson.awk - a Numenta Anomaly Benchmark series (CSV: timestamp,value)
# as CloudEvents, one JSON object per line; the series' name (set with
# -v series=NAME) is the subject and, with the row's number, the id:
#
#   {"specversion":"1.0","id":"nab_temp-1","source":"/nab",
#    "type":"sensor.reading","subject":"nab_temp",
#    "time":"2013-07-04T00:00:00Z","data":{"value":69.88083514}}
#
#   awk -v series=ambient_temperature -f nab2ndjson.awk ambient_temperature.csv
BEGIN { FS = ","; if (series == "") { print "nab2ndjson.awk: set -v series=NAME" > "/dev/stderr"; exit 2 } }
{ sub(/\r$/, "") }
NR == 1 || NF < 2 { next }
{
	t = $1
	sub(/ /, "T", t)
	printf "{\"specversion\":\"1.0\",\"id\":\"%s-%d\",\"source\":\"/nab\"," \
	       "\"type\":\"sensor.reading\",\"subject\":\"%s\",\"time\":\"%sZ\"," \
	       "\"data\":{\"value\":%s}}\n", series, NR - 1, series, t, $2
}
