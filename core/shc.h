// Umbrella header of SHC's public model API (namespace shc). Installed as <shc/shc.h>.
#pragma once

#include "adaptive_rank.h"
#include "attention.h"
#include "block.h"
#include "cayley.h"
#include "config.h"
#include "factorized_cache.h"
#include "feed_forward.h"
#include "hyper_connection.h"
#include "rms_norm.h"
#include "routing/hc_router.h"
#include "routing/mhc_router.h"
#include "routing/router.h"
#include "routing/shc_router.h"
#include "routing_analyzer.h"
#include "sparse_mixture.h"
#include "transformer.h"
