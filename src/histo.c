/*
 * histo.c - the buckets of the metrics' histograms (histo.h).
 */
#include "config.h"

#include "histo.h"

const tidei_histo_bounds tidei_histo_commit = { {
	500000,
	1000000,
	2500000,
	5000000,
	10000000,
	25000000,
	50000000,
	100000000,
	250000000,
	500000000,
	1000000000,
	2500000000,
} };

const tidei_histo_bounds tidei_histo_handler = { {
	1000,
	2500,
	5000,
	10000,
	25000,
	50000,
	100000,
	250000,
	1000000,
	10000000,
	100000000,
	1000000000,
} };
