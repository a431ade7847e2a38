/*
 * nab.c - the Numenta Anomaly Benchmark's scoring (nab.h), written from
 * the benchmark's published rules.
 */
#include "config.h"

#include <math.h>
#include <stdlib.h>

#include "nab.h"

const tidei_nab_profile tidei_nab_standard = { 1.0, 0.11, 1.0 };
const tidei_nab_profile tidei_nab_low_fp = { 1.0, 0.22, 1.0 };
const tidei_nab_profile tidei_nab_low_fn = { 1.0, 0.11, 2.0 };

/* From +1 at the start of a window (-1) to about -1 three windows past
 * its end: 2 sigmoid(-5x) - 1, and -1 beyond 3. */
static double
scaled_sigmoid(double x)
{
	if (x > 3.0)
		return -1.0;
	return 2.0 / (1.0 + exp(5.0 * x)) - 1.0;
}

/* The index of time @p at in @p t (ascending), or -1. */
static long
index_of(const int64_t *t, size_t n, int64_t at)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (t[mid] < at)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < n && t[lo] == at ? (long)lo : -1;
}

int
tidei_nab_score_series(const int64_t *t, const uint8_t *detected, size_t n, const int64_t *win,
		       size_t nwin, const tidei_nab_profile *p, tidei_nab_score *out)
{
	double max_tp = scaled_sigmoid(-1.0), fp = 0;
	double *best = calloc(nwin ? nwin : 1, sizeof *best);
	uint8_t *counted = calloc(nwin ? nwin : 1, 1); /* has a point past probation */
	size_t probation = (size_t)floor(fmin(0.15 * (double)n, 0.15 * 5000));
	long cur = -1, right = -1, prev_right = -1;
	double width = 0, prev_width = 0;
	size_t next = 0;

	if (best == NULL || counted == NULL) {
		free(best);
		free(counted);
		return -1;
	}
	out->tp = out->fp = out->fn = 0;
	for (size_t w = 0; w < nwin; w++)
		best[w] = -p->fn; /* missed, unless a detection says otherwise */
	for (size_t i = 0; i < n; i++) {
		double score;
		int in_window;
		if (next < nwin && cur < 0 && t[i] == win[2 * next]) {
			cur = (long)next++;
			if ((right = index_of(t, n, win[2 * cur + 1])) < 0)
				goto bad;
			width = (double)(right - (long)i + 1);
		}
		in_window = cur >= 0;
		if (in_window && i >= probation)
			counted[cur] = 1;
		if (in_window) {
			score = scaled_sigmoid(-((double)(right - (long)i) + 1) / width) * p->tp /
				max_tp;
		} else if (prev_right < 0) {
			score = -1.0 * p->fp;
		} else {
			score = scaled_sigmoid(fabs((double)(prev_right - (long)i)) /
					       (prev_width - 1)) *
				p->fp;
		}
		if (detected[i] && i >= probation) {
			if (in_window) {
				if (best[cur] == -p->fn)
					out->tp++;
				if (score > best[cur])
					best[cur] = score;
			} else {
				fp += score;
				out->fp++;
			}
		}
		if (in_window && (long)i == right) {
			prev_width = width;
			prev_right = right;
			cur = -1;
		}
	}
	if (next < nwin) /* a window that starts at no point of the series */
		goto bad;
	/* windows wholly in the probationary period do not count */
	out->score = fp;
	out->windows = 0;
	for (size_t w = 0; w < nwin; w++) {
		if (!counted[w])
			continue;
		out->windows++;
		out->score += best[w];
		if (best[w] == -p->fn)
			out->fn++;
	}
	out->null_score = -p->fn * (double)out->windows;
	out->perfect = p->tp * (double)out->windows;
	free(best);
	free(counted);
	return 0;
bad:
	free(best);
	free(counted);
	return -1;
}

double
tidei_nab_normalised(double score, double null_score, double perfect)
{
	if (perfect == null_score)
		return 0;
	return 100.0 * (score - null_score) / (perfect - null_score);
}
