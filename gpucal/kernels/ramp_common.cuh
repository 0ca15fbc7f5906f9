// Shared pieces of the ramp-fit kernels (ramp_fit_likely.cu, ramp_fit_ols_cas22.cu,
// uniform_slope.cu): size bound, rounding-exact arithmetic shorthands and DQ compression.
// DQ bits and index helpers come from common.cuh.
//
// Why explicit rounding intrinsics: the ramp fits are bit-for-bit twins of the NumPy code
// in cpu_fallback/ramp_fit, and NumPy never fuses a multiply with an add.  nvcc and NVRTC
// contract a*b + c into one FMA by default (-fmad=true), which rounds once instead of
// twice; in ``likely`` that alone flips jump decisions of degenerate (2-3 usable
// differences) ramps, whose omit-fits are singular and decided by rounding noise.  Rather
// than depend on every loader passing -fmad=false, each rounding step that matters is
// written with a *_rn intrinsic, which the compiler never contracts or reorders.  (The CPU
// shim builds with -ffp-contract=off, and NumPy's float ufuncs round every operation.)
//
// No system includes; pure per-thread code only (STYLE.md items 4-5).
#pragma once

#include "common.cuh"

// Largest number of resultants a pixel may have: per-thread arrays are sized by it.
// Roman MA tables have at most ~22 resultants.  The groupdq usable mask of ``likely`` is a
// 32-bit word over the K-1 differences, so this must stay <= 33.
#define RAMP_MAX_RESULTANTS 32

// IEEE round-to-nearest operations that are never fused into FMA.
__device__ __forceinline__ double r_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double r_sub(double a, double b) { return __dsub_rn(a, b); }
__device__ __forceinline__ double r_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double r_div(double a, double b) { return __ddiv_rn(a, b); }
__device__ __forceinline__ float r_addf(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ float r_subf(float a, float b) { return __fsub_rn(a, b); }
__device__ __forceinline__ float r_mulf(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ float r_divf(float a, float b) { return __fdiv_rn(a, b); }

// Finite (not NaN, not +-inf) without math.h: NaN fails every comparison.
__device__ __forceinline__ bool ramp_isfinitef(float x) { return fabsf(x) <= 3.40282347e38f; }

// A quiet NaN made at run time (no math.h macros without system includes).
__device__ __forceinline__ float ramp_nanf(float zero) { return zero / zero; }

// Fold a pixel's group flags (a per-thread copy, ``nres`` entries) into its pixel DQ, as
// cpu_fallback.ramp_fit._common.compress_dq: JUMP_DET if any resultant has it; SATURATED
// if any (``sat_if_all`` false) or every resultant is saturated; DO_NOT_USE if every
// resultant is SATURATED or DO_NOT_USE.
__device__ __forceinline__ unsigned int ramp_compress_dq(const unsigned char* flags, int nres,
                                                         unsigned int pixeldq, bool sat_if_all) {
    unsigned int any_bits = 0u, all_bits = 0xffu;
    bool all_bad = true;
    for (int k = 0; k < nres; ++k) {
        const unsigned int g = flags[k];
        any_bits |= g;
        all_bits &= g;
        all_bad = all_bad && (g & (GRP_SATURATED | GRP_DO_NOT_USE)) != 0u;
    }
    unsigned int dq = pixeldq;
    if (any_bits & GRP_JUMP_DET) dq |= PIX_JUMP_DET;
    if ((sat_if_all ? all_bits : any_bits) & GRP_SATURATED) dq |= PIX_SATURATED;
    if (all_bad) dq |= PIX_DO_NOT_USE;
    return dq;
}
