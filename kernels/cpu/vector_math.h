// SIMD versions of expf and erff for the CPU's element-wise loops (GELU is mostly
// erff and expf). glibc's vector math library, libmvec, has them (erff since glibc
// 2.35), and GCC calls them from a vectorised loop when the scalar function is
// declared `simd`; glibc's headers declare so only under -ffast-math, which the engine
// does not use, so this header does it for these two. libmvec's results are within a
// few ulp of the scalar functions' (glibc's tested bounds). CMake defines
// EMONEXT_HAVE_LIBMVEC after checking that the toolchain links them; without it, the
// loops call the scalar functions as before. Include before kernels/formulas.h.
#pragma once
#include <cmath>

#if EMONEXT_HAVE_LIBMVEC && defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
extern "C" {
__attribute__((__simd__("notinbranch"))) float expf(float) noexcept;
__attribute__((__simd__("notinbranch"))) float erff(float) noexcept;
}
#endif
