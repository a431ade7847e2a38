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
