/*
 * test_nab.c - NAB's scoring (nab.h) against the benchmark's published
 * results: the windowed Gaussian detector's per-row anomaly scores in
 * ../shared/testdata/iot/NAB/results, thresholded as NAB's thresholds
 * file says, must score what NAB's own scores files say for each series
 * under each of the three profiles, and the detector's published scores of
 * all 58 series, summed, must normalise to NAB's published result.
 * Skipped without the data; hand-made series are checked always.
 */
#define _GNU_SOURCE
#include <check.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <yajl/yajl_tree.h>

#include "helpers.h"
#include "nab.h"

#define MIN_NS 60000000000ll

/* A series of @p n minutes, one window at [ws, we]: the score of
 * detections at @p d (a -1-terminated list of indexes). */
static tidei_nab_score
score_of(size_t n, long ws, long we, const long *d)
{
	int64_t *t = calloc(n, sizeof *t), win[2];
	uint8_t *det = calloc(n, 1);
	tidei_nab_score s;

	for (size_t i = 0; i < n; i++)
		t[i] = (int64_t)i * MIN_NS;
	for (; *d >= 0; d++)
		det[*d] = 1;
	win[0] = ws * MIN_NS;
	win[1] = we * MIN_NS;
	ck_assert_int_eq(tidei_nab_score_series(t, det, n, win, 1, &tidei_nab_standard, &s), 0);
	free(t);
	free(det);
	return s;
}

START_TEST(scores_by_hand)
{
	/* 1000 points (probation: the first 150), a window at 500-599 */
	tidei_nab_score s;

	s = score_of(1000, 500, 599, (long[]){ -1 });
	ck_assert(fabs(s.score - -1.0) < 1e-12 && s.fn == 1 && s.windows == 1);
	ck_assert(fabs(tidei_nab_normalised(s.score, s.null_score, s.perfect)) < 1e-12);
	/* at the window's first point: a perfect score */
	s = score_of(1000, 500, 599, (long[]){ 500, -1 });
	ck_assert(fabs(s.score - 1.0) < 1e-12 && s.tp == 1 && s.fn == 0);
	ck_assert(fabs(tidei_nab_normalised(s.score, s.null_score, s.perfect) - 100) < 1e-9);
	/* later in the window is worth less; the best detection counts once */
	s = score_of(1000, 500, 599, (long[]){ 590, 550, -1 });
	ck_assert(s.score < 1.0 && s.score > 0 && s.tp == 1);
	/* before any window a false positive costs the whole fpWeight; in the
	 * probationary period nothing counts */
	s = score_of(1000, 500, 599, (long[]){ 300, 100, -1 });
	ck_assert(fabs(s.score - (-1.0 - 0.11)) < 1e-12 && s.fp == 1);
	/* just after a window it costs little */
	s = score_of(1000, 500, 599, (long[]){ 500, 601, -1 });
	ck_assert(s.score > 1.0 - 0.11 && s.score < 1.0 && s.fp == 1);
	/* a window at no point of the series */
	{
		int64_t t[3] = { 0, MIN_NS, 2 * MIN_NS }, w[2] = { 5, 6 };
		uint8_t det[3] = { 0 };
		ck_assert_int_eq(tidei_nab_score_series(t, det, 3, w, 1, &tidei_nab_standard, &s),
				 -1);
	}
}
END_TEST

static int64_t
parse_ts(const char *s)
{
	struct tm tm;

	memset(&tm, 0, sizeof tm);
	if (sscanf(s, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour,
		   &tm.tm_min, &tm.tm_sec) != 6)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (int64_t)timegm(&tm) * 1000000000ll;
}

/* NAB's three cost profiles, by the names of its results files (the
 * windowed Gaussian detector's threshold is 1.0 under each). */
static const struct {
	const char *name;
	const tidei_nab_profile *p;
} profiles[] = {
	{ "standard", &tidei_nab_standard },
	{ "reward_low_FP_rate", &tidei_nab_low_fp },
	{ "reward_low_FN_rate", &tidei_nab_low_fn },
};

/* The published score of @p file in @p scores (CSV), or NAN. */
static double
published(const char *scores, const char *file)
{
	FILE *f = fopen(scores, "r");
	char line[1024];
	double v = NAN;

	ck_assert_ptr_nonnull(f);
	while (fgets(line, sizeof line, f) != NULL) {
		char *fields[6], *save = NULL, *p = line;
		int k = 0;
		for (; k < 6 && (fields[k] = strtok_r(p, ",", &save)) != NULL; k++)
			p = NULL;
		if (k == 6 && strcmp(fields[2], file) == 0)
			v = atof(fields[4]);
	}
	fclose(f);
	return v;
}

START_TEST(scores_as_nab_publishes)
{
	const char *found = th_testdata("iot/NAB");
	char nab[800];
	const char *names[] = { "ambient_temperature_system_failure",
				"cpu_utilization_asg_misconfiguration",
				"ec2_request_latency_system_failure",
				"machine_temperature_system_failure",
				"nyc_taxi",
				"rogue_agent_key_hold",
				"rogue_agent_key_updown" };
	char path[1024], err[256];
	yajl_val windows;
	char *text;
	int checked = 0;

	if (found == NULL)
		return; /* no ../shared/testdata: the hand-made cases only */
	snprintf(nab, sizeof nab, "%s", found); /* th_testdata's buffers are reused */
	snprintf(path, sizeof path, "%s/labels/combined_windows.json", nab);
	text = th_slurp(path);
	ck_assert_ptr_nonnull(text);
	windows = yajl_tree_parse(text, err, sizeof err);
	ck_assert_ptr_nonnull(windows);
	for (size_t k = 0; k < sizeof names / sizeof *names; k++) {
		char file[256], line[1024];
		const char *key[] = { file, NULL };
		yajl_val w;
		int64_t *t = NULL, *win;
		uint8_t *det = NULL;
		size_t n = 0, cap = 0, nw;
		tidei_nab_score s;
		double want;
		FILE *f;

		snprintf(file, sizeof file, "realKnownCause/%s.csv", names[k]);
		snprintf(path, sizeof path,
			 "%s/results/windowedGaussian/realKnownCause/windowedGaussian_%s.csv", nab,
			 names[k]);
		if ((f = fopen(path, "r")) == NULL)
			continue;
		while (fgets(line, sizeof line, f) != NULL) {
			char *c1 = strchr(line, ','), *c2 = c1 ? strchr(c1 + 1, ',') : NULL;
			int64_t ts = parse_ts(line);
			if (ts < 0 || c2 == NULL)
				continue; /* the header */
			if (n == cap) {
				cap = cap ? cap * 2 : 4096;
				t = realloc(t, cap * sizeof *t);
				det = realloc(det, cap);
			}
			t[n] = ts;
			det[n++] = atof(c2 + 1) >= 1.0; /* the standard profile's threshold */
		}
		fclose(f);
		w = yajl_tree_get(windows, key, yajl_t_array);
		ck_assert_ptr_nonnull(w);
		nw = w->u.array.len;
		win = calloc(2 * nw + 1, sizeof *win);
		for (size_t i = 0; i < nw; i++) {
			yajl_val pair = w->u.array.values[i];
			win[2 * i] = parse_ts(YAJL_GET_STRING(pair->u.array.values[0]));
			win[2 * i + 1] = parse_ts(YAJL_GET_STRING(pair->u.array.values[1]));
		}
		for (int pr = 0; pr < 3; pr++) {
			ck_assert_int_eq(
				tidei_nab_score_series(t, det, n, win, nw, profiles[pr].p, &s), 0);
			snprintf(path, sizeof path,
				 "%s/results/windowedGaussian/windowedGaussian_%s_scores.csv", nab,
				 profiles[pr].name);
			want = published(path, file);
			ck_assert_msg(fabs(s.score - want) < 1e-6, "%s (%s): %.9f, NAB says %.9f",
				      file, profiles[pr].name, s.score, want);
			checked++;
		}
		free(t);
		free(det);
		free(win);
	}
	ck_assert_int_eq(checked, 7 * 3);
	yajl_tree_free(windows);
	free(text);
}
END_TEST

/* The normalisation: the windowed Gaussian detector's published raw
 * scores of all 58 series, summed, against the null and perfect scores
 * of each series (its timestamps and windows), give NAB's published
 * final results for each profile. */
START_TEST(normalised_as_nab_publishes)
{
	const char *found = th_testdata("iot/NAB");
	char nab[800], path[1024], err[256], *text, *results;
	yajl_val windows, final;
	size_t series = 0;

	if (found == NULL)
		return;
	snprintf(nab, sizeof nab, "%s", found);
	snprintf(path, sizeof path, "%s/labels/combined_windows.json", nab);
	text = th_slurp(path);
	ck_assert_ptr_nonnull(text);
	windows = yajl_tree_parse(text, err, sizeof err);
	ck_assert_ptr_nonnull(windows);
	snprintf(path, sizeof path, "%s/results/final_results.json", nab);
	results = th_slurp(path);
	ck_assert_ptr_nonnull(results);
	final = yajl_tree_parse(results, err, sizeof err);
	ck_assert_ptr_nonnull(final);
	for (int pr = 0; pr < 3; pr++) {
		const char *key[] = { "windowedGaussian", profiles[pr].name, NULL };
		double null_score = 0, perfect = 0, raw = 0, want, got;
		char line[1024];
		FILE *f;

		series = 0;
		for (size_t k = 0; k < windows->u.object.len; k++) {
			const char *file = windows->u.object.keys[k];
			yajl_val w = windows->u.object.values[k];
			size_t n = 0, cap = 0, nw = w->u.array.len;
			int64_t *t = NULL, *win = calloc(2 * nw + 1, sizeof *win);
			uint8_t *det;
			tidei_nab_score s;

			snprintf(path, sizeof path, "%s/data/%s", nab, file);
			f = fopen(path, "r");
			ck_assert_msg(f != NULL, "%s", path);
			while (fgets(line, sizeof line, f) != NULL) {
				int64_t ts = parse_ts(line);
				if (ts < 0)
					continue; /* the header */
				if (n == cap) {
					cap = cap ? cap * 2 : 4096;
					t = realloc(t, cap * sizeof *t);
					ck_assert_ptr_nonnull(t);
				}
				t[n++] = ts;
			}
			fclose(f);
			for (size_t i = 0; i < nw; i++) {
				yajl_val pair = w->u.array.values[i];
				win[2 * i] = parse_ts(YAJL_GET_STRING(pair->u.array.values[0]));
				win[2 * i + 1] = parse_ts(YAJL_GET_STRING(pair->u.array.values[1]));
			}
			det = calloc(n ? n : 1, 1);
			ck_assert_int_eq(
				tidei_nab_score_series(t, det, n, win, nw, profiles[pr].p, &s), 0);
			null_score += s.null_score;
			perfect += s.perfect;
			snprintf(path, sizeof path,
				 "%s/results/windowedGaussian/windowedGaussian_%s_scores.csv", nab,
				 profiles[pr].name);
			raw += published(path, file);
			series++;
			free(t);
			free(det);
			free(win);
		}
		ck_assert_uint_eq(series, 58);
		got = tidei_nab_normalised(raw, null_score, perfect);
		ck_assert_ptr_nonnull(yajl_tree_get(final, key, yajl_t_number));
		want = YAJL_GET_DOUBLE(yajl_tree_get(final, key, yajl_t_number));
		ck_assert_msg(fabs(got - want) < 1e-6, "%s: %.9f, NAB says %.9f", profiles[pr].name,
			      got, want);
	}
	yajl_tree_free(final);
	yajl_tree_free(windows);
	free(results);
	free(text);
}
END_TEST

Suite *
nab_suite(void)
{
	Suite *s = suite_create("nab");
	TCase *tc = tcase_create("nab");

	tcase_add_checked_fixture(tc, NULL, th_cleanup);
	tcase_add_test(tc, scores_by_hand);
	tcase_add_test(tc, scores_as_nab_publishes);
	tcase_add_test(tc, normalised_as_nab_publishes);
	suite_add_tcase(s, tc);
	return s;
}
