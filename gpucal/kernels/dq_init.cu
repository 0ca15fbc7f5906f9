// dq_init.cu: raw resultants to float32 DN and the initial pixel DQ (algorithms.md section 1).
//
// Thread mapping: one thread per pixel p = y * nx + x, 1-D launch (any block size; 256 is
// what the launchers use, grid ceil(npix / 256)); threads with p >= npix return at once.
//
// Layouts (pixel-fastest, common.cuh): raw (K, npix) uint16 and out (K, npix) float32 DN;
// reference_read (npix) uint16; pixeldq (output) and mask_dq (npix) uint32.
//
// Launch contract:
// * dq_init_convert: out = float32(raw) + reference_read - offset, all in float32 (exact:
//   every value is an integer below 2**24).  use_reference == 0 ignores reference_read
//   (pass a 1-element dummy).  A RampModel that is already float32 needs no kernel.
// * dq_init_pixeldq writes pixeldq from scratch: GW_AFFECTED_DATA on the columns
//   [col_x0, col_x1) of every row, DO_NOT_USE | GW_AFFECTED_DATA on the box
//   [box_y0, box_y1) x [box_x0, box_x1), then mask_dq OR-ed in where use_mask != 0.
//   The ranges are half-open and already resolved on the host from romancal's Python slices
//   (validity test, expansion, clipping, negative stops: slice(a, b).indices(n)); an empty
//   range (x0 >= x1) flags nothing.

#include "common.cuh"

extern "C" __global__ void dq_init_convert(const unsigned short* __restrict__ raw,
                                           const unsigned short* __restrict__ reference_read, int use_reference,
                                           float offset, float* __restrict__ out, int nres, int npix)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    const float ref = use_reference != 0 ? (float)reference_read[p] : 0.0f;
    for (int k = 0; k < nres; ++k) {
        const long long at = gc_at(k, npix, p);
        float v = (float)raw[at];
        if (use_reference != 0) {
            v = v + ref;
        }
        out[at] = v - offset;
    }
}

extern "C" __global__ void dq_init_pixeldq(unsigned int* __restrict__ pixeldq, const unsigned int* __restrict__ mask_dq,
                                           int use_mask, int col_x0, int col_x1, int box_x0, int box_x1, int box_y0,
                                           int box_y1, int nx, int npix)
{
    const long long p = gc_thread_index();
    if (p >= npix) {
        return;
    }
    const int y = (int)(p / nx), x = (int)(p % nx);
    unsigned int dq = 0u;
    if (x >= col_x0 && x < col_x1) {
        dq = PIX_GW_AFFECTED_DATA;
    }
    if (x >= box_x0 && x < box_x1 && y >= box_y0 && y < box_y1) {
        dq |= PIX_DO_NOT_USE | PIX_GW_AFFECTED_DATA;
    }
    if (use_mask != 0) {
        dq |= mask_dq[p];
    }
    pixeldq[p] = dq;
}
