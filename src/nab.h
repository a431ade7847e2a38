/*
 * nab.h - the Numenta Anomaly Benchmark's scoring of one series, as NAB
 * defines it (its published rules: anomaly windows, a scaled sigmoid of a
 * detection's place, a probationary period, cost profiles).
 *
 * A detection inside an anomaly window counts once per window, more the
 * earlier it comes (the window's first point is worth tpWeight, its last
 * about none); a window without one costs fnWeight; a detection outside
 * every window costs up to fpWeight, less the closer it follows the end
 * of the window before it.  Detections in the first 15% of the series (at
 * most 750 points) are not counted.
 */
#ifndef TIDE_NAB_H
#define TIDE_NAB_H

#include <stddef.h>
#include <stdint.h>

/** A cost profile: NAB's standard one is { 1.0, 0.11, 1.0 }. */
typedef struct tidei_nab_profile {
	double tp, fp, fn;
} tidei_nab_profile;

extern const tidei_nab_profile tidei_nab_standard, tidei_nab_low_fp, tidei_nab_low_fn;

/** What a series scored. */
typedef struct tidei_nab_score {
	double score;      /* raw */
	double null_score; /* of a detector that never detects (all windows missed) */
	double perfect;    /* of one that detects each window at its first point */
	unsigned tp, fp, fn, windows;
} tidei_nab_score;

/** Score a series of @p n points at times @p t (ascending), @p detected[i]
 *  non-zero where the detector fired, against @p nwin anomaly windows
 *  (@p win[2k], @p win[2k + 1]: first and last time, both points of the
 *  series).  0, or -1 when a window's bounds are not points of it. */
int tidei_nab_score_series(const int64_t *t, const uint8_t *detected, size_t n, const int64_t *win,
			   size_t nwin, const tidei_nab_profile *p, tidei_nab_score *out);

/** NAB's normalised score of summed raw scores: 100 at perfect, 0 for the
 *  null detector. */
double tidei_nab_normalised(double score, double null_score, double perfect);

#endif
