// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
// SC 2011): a counter-based generator. Element i of a random fill draws from
// counter (base + i/4), lane i%4, under key = seed, so the CPU and CUDA backends
// produce the same numbers whatever the thread layout.
#pragma once
#include <cstdint>

#include "core/base/macros.h"

namespace emonext::philox {

struct U32x4 { uint32_t v[4]; };

EMONEXT_HD void mulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  uint64_t p = uint64_t(a) * uint64_t(b);
  hi = uint32_t(p >> 32);
  lo = uint32_t(p);
}

EMONEXT_HD U32x4 philox4x32_10(uint64_t counter, uint64_t seed) {
  uint32_t c0 = uint32_t(counter), c1 = uint32_t(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = uint32_t(seed), k1 = uint32_t(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    mulhilo(0xD2511F53u, c0, hi0, lo0);
    mulhilo(0xCD9E8D57u, c2, hi1, lo1);
    uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 += 0x9E3779B9u;
    k1 += 0xBB67AE85u;
  }
  return U32x4{{c0, c1, c2, c3}};
}

// [0, 1) with 24 random bits: exact in float, identical on every backend.
EMONEXT_HD float uniform01(uint32_t u) { return float(u >> 8) * (1.0f / 16777216.0f); }
// (0, 1]: safe for log().
EMONEXT_HD float uniform01_open0(uint32_t u) { return float((u >> 8) + 1u) * (1.0f / 16777216.0f); }

}  // namespace emonext::philox
