/*
 * pworker.h - a projection build's helper, as the module of projections
 * sees it: the scripts loaded in a Lua state of the helper's own, with the
 * one projection being built defined, applying the events of its part.
 * pbuild.c shares a build out among helpers through these operations and
 * knows nothing of projections.
 */
#ifndef TIDE_PWORKER_H
#define TIDE_PWORKER_H

#include "pbuild.h"

extern const tidei_pbuild_ops tidei_pworker_ops;

#endif
