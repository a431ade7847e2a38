# handbook_feedback.awk - the Fraud Detection Handbook's simulated
# transactions for a backtest: each transaction as a card.transaction
# event labelled with data.is_fraud, and for each fraud a
# card.fraud_confirmed event `delay` days later (the chargeback stream),
# each line prefixed with its time and a tab, to be sorted by it:
#
#   awk -v delay=7 -f handbook_feedback.awk 2018-04-*.csv | sort -s -t '	' -k1,1 | cut -f2-
#
# (the first 14 days choose parameters, the last 14 are scored: see
# tests/data/handbook_scores.sh)
BEGIN { FS = ","; if (delay == "") delay = 7 }
{ sub(/\r$/, "") }
$2 == "TRANSACTION_ID" || NF < 9 { next }
{
	t = $3
	sub(/ /, "T", t)
	printf "%s\t{\"specversion\":\"1.0\",\"id\":\"tx-%s\",\"source\":\"/handbook\"," \
	       "\"type\":\"card.transaction\",\"subject\":\"card-%s\",\"time\":\"%sZ\"," \
	       "\"data\":{\"amount\":%s,\"terminal\":\"t-%s\",\"is_fraud\":%s}}\n",
	       t, $2, $4, t, $6, $5, $9 == "1" ? "true" : "false"
	if ($9 == "1") {
		# the confirmation, delay days later (same time of day)
		c = confirm_time(t, delay)
		printf "%s\t{\"specversion\":\"1.0\",\"id\":\"cb-%s\",\"source\":\"/chargebacks\"," \
		       "\"type\":\"card.fraud_confirmed\",\"subject\":\"card-%s\",\"time\":\"%sZ\"," \
		       "\"data\":{\"transaction\":\"tx-%s\",\"terminal\":\"t-%s\"}}\n",
		       c, $2, $4, c, $2, $5
	}
}
# "YYYY-MM-DDThh:mm:ss" plus @p days, within April and May 2018
function confirm_time(t, days,    y, m, d, rest) {
	y = substr(t, 1, 4) + 0; m = substr(t, 6, 2) + 0; d = substr(t, 9, 2) + 0 + days
	rest = substr(t, 11)
	if (m == 4 && d > 30) { m = 5; d -= 30 }
	return sprintf("%04d-%02d-%02d%s", y, m, d, rest)
}
