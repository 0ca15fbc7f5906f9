// common.cuh: what every gpucal kernel shares -- DQ bit values and index helpers.
//
// Included by each kernel source with `#include "common.cuh"` and found through the
// include path (-I gpucal/kernels) by NVRTC, nvcc and the CPU shim alike.  It must stay
// self-contained: no system headers (NVRTC has none by default) and no __CUDA_ARCH__
// branches, so that the very same text runs on the GPU and, through cpu_shim.h, on the CPU.
//
// Layout (STYLE.md item 3): a (K, npix) array is stored pixel-fastest, element (k, p) at
// k * npix + p, with p = y * nx + x the flat pixel index of an (ny, nx) frame.  Offsets are
// 64-bit (K * 4096 * 4096 overflows int32 beyond 127 resultants).
//
// The DQ values below must equal gpucal.dq.PixelFlag / GroupFlag; tests/kernels/test_compile.py
// parses this file and checks every constant against the Python enums.
#pragma once

// ---- pixel flags (uint32, gpucal.dq.PixelFlag) ----------------------------------------
static constexpr unsigned int PIX_DO_NOT_USE = 1u << 0;
static constexpr unsigned int PIX_SATURATED = 1u << 1;
static constexpr unsigned int PIX_JUMP_DET = 1u << 2;
static constexpr unsigned int PIX_DROPOUT = 1u << 3;
static constexpr unsigned int PIX_GW_AFFECTED_DATA = 1u << 4;
static constexpr unsigned int PIX_PERSISTENCE = 1u << 5;
static constexpr unsigned int PIX_AD_FLOOR = 1u << 6;
static constexpr unsigned int PIX_OUTLIER = 1u << 7;
static constexpr unsigned int PIX_UNRELIABLE_ERROR = 1u << 8;
static constexpr unsigned int PIX_NON_SCIENCE = 1u << 9;
static constexpr unsigned int PIX_DEAD = 1u << 10;
static constexpr unsigned int PIX_HOT = 1u << 11;
static constexpr unsigned int PIX_WARM = 1u << 12;
static constexpr unsigned int PIX_LOW_QE = 1u << 13;
static constexpr unsigned int PIX_TELEGRAPH = 1u << 15;
static constexpr unsigned int PIX_NONLINEAR = 1u << 16;
static constexpr unsigned int PIX_BAD_REF_PIXEL = 1u << 17;
static constexpr unsigned int PIX_NO_FLAT_FIELD = 1u << 18;
static constexpr unsigned int PIX_NO_GAIN_VALUE = 1u << 19;
static constexpr unsigned int PIX_NO_LIN_CORR = 1u << 20;
static constexpr unsigned int PIX_NO_SAT_CHECK = 1u << 21;
static constexpr unsigned int PIX_UNRELIABLE_BIAS = 1u << 22;
static constexpr unsigned int PIX_UNRELIABLE_DARK = 1u << 23;
static constexpr unsigned int PIX_UNRELIABLE_SLOPE = 1u << 24;
static constexpr unsigned int PIX_UNRELIABLE_FLAT = 1u << 25;
static constexpr unsigned int PIX_RESERVED_5 = 1u << 26;
static constexpr unsigned int PIX_RESERVED_6 = 1u << 27;
static constexpr unsigned int PIX_UNRELIABLE_RESET = 1u << 28;
static constexpr unsigned int PIX_RESERVED_7 = 1u << 29;
static constexpr unsigned int PIX_OTHER_BAD_PIXEL = 1u << 30;
static constexpr unsigned int PIX_REFERENCE_PIXEL = 1u << 31;

// ---- group flags (uint8, gpucal.dq.GroupFlag) ------------------------------------------
static constexpr unsigned char GRP_DO_NOT_USE = 1u << 0;
static constexpr unsigned char GRP_SATURATED = 1u << 1;
static constexpr unsigned char GRP_JUMP_DET = 1u << 2;
static constexpr unsigned char GRP_DROPOUT = 1u << 3;
static constexpr unsigned char GRP_AD_FLOOR = 1u << 6;
static constexpr unsigned char GRP_WFI18_TRANSIENT = 1u << 7;

// ---- index helpers ------------------------------------------------------------------------

// Flat index of this thread in a 1-D launch: blockIdx.x * blockDim.x + threadIdx.x.
__device__ __forceinline__ long long gc_thread_index()
{
    return (long long)blockIdx.x * (long long)blockDim.x + (long long)threadIdx.x;
}

// Offset of element (k, p) of a pixel-fastest (K, npix) array.
__device__ __forceinline__ long long gc_at(int k, long long npix, long long p)
{
    return (long long)k * npix + p;
}

// Index of the last resultant of pixel p with no group flag but JUMP_DET (the last one the
// ramp fit uses: `last` of cpu_fallback/ramp_fit/gls.py's initial_usable); -1 if none.
__device__ __forceinline__ int gc_last_clean(const unsigned char* __restrict__ groupdq, int nres, long long npix,
                                             long long p)
{
    int k = nres - 1;
    while (k >= 0 && (groupdq[gc_at(k, npix, p)] & (unsigned char)~GRP_JUMP_DET) != 0) {
        --k;
    }
    return k;
}
