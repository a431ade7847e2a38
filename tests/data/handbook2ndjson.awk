# handbook2ndjson.awk - the Fraud Detection Handbook's simulated
# transactions (CSV: ,TRANSACTION_ID,TX_DATETIME,CUSTOMER_ID,TERMINAL_ID,
# TX_AMOUNT,...) as CloudEvents, one JSON object per line:
#
#   {"specversion":"1.0","id":"tx-0","source":"/handbook",
#    "type":"card.transaction","subject":"card-596",
#    "time":"2018-04-01T00:00:31Z",
#    "data":{"amount":57.16,"terminal":"t-3156"}}
#
# Header lines (one per daily file) are skipped; the labels
# (TX_FRAUD, TX_FRAUD_SCENARIO) stay out of the events.
#
#   awk -F, -f handbook2ndjson.awk 2018-04-0[1-7].csv
BEGIN { FS = "," }
{ sub(/\r$/, "") }
$2 == "TRANSACTION_ID" || NF < 6 { next }
{
	t = $3
	sub(/ /, "T", t)
	printf "{\"specversion\":\"1.0\",\"id\":\"tx-%s\",\"source\":\"/handbook\"," \
	       "\"type\":\"card.transaction\",\"subject\":\"card-%s\",\"time\":\"%sZ\"," \
	       "\"data\":{\"amount\":%s,\"terminal\":\"t-%s\"}}\n", $2, $4, t, $6, $5
}
