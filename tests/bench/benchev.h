/*
 * benchev.h - the benchmark's event, shared by every load generator.
 *
 * A realistic CloudEvent of about 200 bytes: sequential id
 * "bench-<run>-<n>", type "order.placed", a subject drawn from 1000 keys,
 * and a small data object with a few fields including a number.  The same
 * bytes are what Redis (XADD field value) and NATS (message body) carry.
 */
#ifndef BENCHEV_H
#define BENCHEV_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_SUBJECTS 1000
#define BENCH_CUSTOMERS 5000
/* The projection benchmark's keys: accounts "acc-00000" .. "acc-99999". */
#define BENCH_ACCOUNTS 100000

static inline uint64_t
bench_mix(uint64_t x)
{
	/* splitmix64: a cheap, well-spread hash of the event number */
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Write event n of run `run` into buf (no newline); returns its length. */
static inline int
bench_event(char *buf, size_t cap, const char *run, uint64_t n)
{
	uint64_t h = bench_mix(n);
	unsigned subject = (unsigned)(h % BENCH_SUBJECTS);
	unsigned customer = (unsigned)((h >> 20) % BENCH_CUSTOMERS);
	unsigned cents = (unsigned)((h >> 40) % 100000) + 100;
	unsigned items = (unsigned)((h >> 8) % 9) + 1;

	return snprintf(buf, cap,
			"{\"specversion\":\"1.0\",\"id\":\"bench-%s-%llu\","
			"\"source\":\"/bench/shop\",\"type\":\"order.placed\","
			"\"subject\":\"order-%04u\","
			"\"data\":{\"customer\":\"cust-%05u\",\"total\":%u.%02u,"
			"\"items\":%u,\"currency\":\"EUR\",\"channel\":\"web\"}}",
			run, (unsigned long long)n, subject, customer, cents / 100, cents % 100,
			items);
}

/*
 * Event n of the projection benchmark (about 220 bytes): an account event
 * for one of `accounts` keys (the subject and data.account), of type
 * account.deposited (50%), account.withdrew (30%) or order.placed (20%),
 * with an amount, a currency, a channel and a reference.
 */
static inline int
bench_account_event(char *buf, size_t cap, const char *run, uint64_t n, unsigned accounts)
{
	static const char *const channels[] = { "web", "app", "branch", "atm" };
	uint64_t h = bench_mix(n ^ 0x5eedull);
	unsigned account = (unsigned)(h % accounts);
	unsigned kind = (unsigned)((h >> 24) % 100);
	unsigned cents = (unsigned)((h >> 40) % 50000) + 100;
	const char *type = kind < 50   ? "account.deposited"
			   : kind < 80 ? "account.withdrew"
				       : "order.placed";

	return snprintf(buf, cap,
			"{\"specversion\":\"1.0\",\"id\":\"acct-%s-%llu\","
			"\"source\":\"/bench/bank\",\"type\":\"%s\","
			"\"subject\":\"account-%05u\","
			"\"data\":{\"account\":\"acc-%05u\",\"amount\":%u.%02u,"
			"\"currency\":\"EUR\",\"channel\":\"%s\",\"ref\":\"tx-%010llu\"}}",
			run, (unsigned long long)n, type, account, account, cents / 100,
			cents % 100, channels[(h >> 12) & 3],
			(unsigned long long)((h >> 7) % 10000000000ull));
}

/* The rules benchmark's event time: milliseconds after 2026-01-01T00:00Z. */
#define BENCH_T0 1767225600LL /* 2026-01-01T00:00:00Z in seconds since 1970 */
#define BENCH_DAY_MS 86400000LL

/* RFC 3339 UTC with milliseconds ("2026-01-01T00:00:00.000Z", 24 bytes
 * and a NUL) for @p ms (>= 0) after BENCH_T0. */
static inline void
bench_time(char *out, size_t cap, int64_t ms)
{
	int64_t s = BENCH_T0 + ms / 1000, days = s / 86400, sod = s % 86400;
	/* civil date from days since 1970 (proleptic Gregorian, days >= 0) */
	int64_t z = days + 719468, era = z / 146097, doe = z - era * 146097;
	int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100), mp = (5 * doy + 2) / 153;
	int64_t d = doy - (153 * mp + 2) / 5 + 1, m = mp < 10 ? mp + 3 : mp - 9;
	int64_t y = yoe + era * 400 + (m <= 2);

	snprintf(out, cap, "%04u-%02u-%02uT%02u:%02u:%02u.%03uZ", (unsigned)y % 10000,
		 (unsigned)m % 100, (unsigned)d % 100, (unsigned)sod / 3600 % 100,
		 (unsigned)sod / 60 % 60, (unsigned)sod % 60, (unsigned)(ms % 1000));
}

/* Sources of the rules benchmark's events (how a watcher tells them from
 * what a rule emits). */
#define BENCH_CARD_SOURCE "/bench/cards"
#define BENCH_SENSOR_SOURCE "/bench/sensors"

/*
 * Event n of the velocity rule's benchmark (about 250 bytes): a card
 * transaction on one of @p cards cards, at event time @p ms (the caller
 * spreads the events over the run, never backwards).  Amounts are mostly
 * small: 90% from 1 to 150, 9% up to 1000, 1% up to 6000, so that a few
 * cards pass 5000 in a day.
 *
 *   {"specversion":"1.0","id":"card-r1-42","source":"/bench/cards",
 *    "type":"card.transaction","subject":"card-04711",
 *    "time":"2026-01-03T07:12:09.600Z","datacontenttype":"application/json",
 *    "data":{"amount":37.25,"terminal":"t-0123","merchant":"m-042"}}
 */
static inline int
bench_card_event(char *buf, size_t cap, const char *run, uint64_t n, unsigned cards, int64_t ms)
{
	uint64_t h = bench_mix(n ^ 0xca4dull);
	unsigned card = (unsigned)(h % cards);
	unsigned band = (unsigned)((h >> 24) % 1000), r = (unsigned)((h >> 34) % 1000000);
	unsigned cents = band < 900   ? 100 + r % 14900
			 : band < 990 ? 15000 + r % 85000
				      : 100000 + r % 500000;
	unsigned terminal = (unsigned)((h >> 12) % 10000);
	char t[64];

	bench_time(t, sizeof t, ms);
	return snprintf(
		buf, cap,
		"{\"specversion\":\"1.0\",\"id\":\"card-%s-%llu\","
		"\"source\":\"" BENCH_CARD_SOURCE "\",\"type\":\"card.transaction\","
		"\"subject\":\"card-%05u\",\"time\":\"%s\","
		"\"datacontenttype\":\"application/json\","
		"\"data\":{\"amount\":%u.%02u,\"terminal\":\"t-%04u\",\"merchant\":\"m-%03u\"}}",
		run, (unsigned long long)n, card, t, cents / 100, cents % 100, terminal,
		terminal % 1000);
}

/* A stride coprime with @p keys: i * stride % keys visits every key once
 * in @p keys steps, in an order that is not the keys' own. */
static inline uint64_t
bench_stride(uint64_t keys)
{
	uint64_t s = 7919;

	for (;; s += 2) {
		uint64_t a = s, b = keys;
		while (b) {
			uint64_t t = a % b;
			a = b;
			b = t;
		}
		if (a == 1)
			return s;
	}
}

/*
 * Event n of the absence rule's benchmark (about 200 bytes): a reading of
 * device ((n - 1) * stride) % devices, so that @p devices consecutive
 * events cover every device once, at event time @p ms.
 *
 *   {"specversion":"1.0","id":"sensor-a1-42","source":"/bench/sensors",
 *    "type":"sensor.reading","subject":"dev-04711",
 *    "time":"2026-01-01T00:00:04.200Z","data":{"value":21.7}}
 */
static inline int
bench_sensor_event(char *buf, size_t cap, const char *run, uint64_t n, unsigned devices,
		   uint64_t stride, int64_t ms)
{
	unsigned dev = (unsigned)((n - 1) * stride % devices);
	unsigned tenths = (unsigned)(bench_mix(n) % 400) + 100;
	char t[64];

	bench_time(t, sizeof t, ms);
	return snprintf(buf, cap,
			"{\"specversion\":\"1.0\",\"id\":\"sensor-%s-%llu\","
			"\"source\":\"" BENCH_SENSOR_SOURCE "\",\"type\":\"sensor.reading\","
			"\"subject\":\"dev-%05u\",\"time\":\"%s\",\"data\":{\"value\":%u.%u}}",
			run, (unsigned long long)n, dev, t, tenths / 10, tenths % 10);
}

static inline double
bench_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* What the load generators share: failing, sleeping, percentiles. */

/* "PROGRAM: " + fmt (with one string argument) on stderr; exit 1. */
static inline void
bench_die(const char *fmt, const char *arg)
{
	fprintf(stderr, "%s: ", program_invocation_short_name);
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(1);
}

static inline void
bench_sleep_ms(double ms)
{
	struct timespec ts = { (time_t)(ms / 1000),
			       (long)((ms - (double)(long)(ms / 1000) * 1000) * 1e6) };
	nanosleep(&ts, NULL);
}

static inline int
bench_cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

/* The @p p quantile (0..1) of the sorted @p v. */
static inline double
bench_pct(const double *v, long n, double p)
{
	long i = (long)(p * (double)(n - 1) + 0.5);
	return v[i < n ? i : n - 1];
}

/* Sort the @p n latencies (µs) and print their summary as key=value pairs,
 * each after a space: median, p99, p99.9, mean, min, max. */
static inline void
bench_print_latency(double *lat, long n)
{
	double sum = 0;

	for (long i = 0; i < n; i++)
		sum += lat[i];
	qsort(lat, (size_t)n, sizeof *lat, bench_cmp_double);
	printf(" median_us=%.1f p99_us=%.1f p999_us=%.1f mean_us=%.1f min_us=%.1f max_us=%.1f",
	       bench_pct(lat, n, 0.5), bench_pct(lat, n, 0.99), bench_pct(lat, n, 0.999),
	       sum / (double)n, lat[0], lat[n - 1]);
}

#endif
