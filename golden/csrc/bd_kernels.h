/* Shared pieces of the golden model's C kernels (golden/native.py builds them): the per-block
   selection of SPEC 3-5 and SPEC 1's rounding to FP16, used by bd_quant.c and fake_quant.c, and the
   functions other files call. The constants and tables come from bd_constants.h, which
   golden/native.py generates from golden/spec.py and golden/formatbook.py at build time. */
#ifndef BD_KERNELS_H
#define BD_KERNELS_H

#include <stdint.h>
#include <string.h>
#include <math.h>

/* The per-element kernels are also compiled for AVX2 and the CPU picks at load time (GCC's function
   multi-versioning): the same operations, integer or exact in binary64, so the same bits. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && !defined(BD_SCALAR_ONLY)
#define MULTIVERSION __attribute__((target_clones("avx2", "default")))
#else
#define MULTIVERSION
#endif

#include "bd_constants.h"

/* SPEC 1, 3, 4.1: fields of one block. Returns E; fills sign, ex (0 unless normal), sig (0 unless
   normal), q. *bad is set when an element is Inf/NaN. */
static inline int block_fields(const uint16_t *x, int block, int *sign, int *ex, int *sig,
                               int *q, uint8_t *bad)
{
    int E = 0, nonfinite = 0;
    for (int k = 0; k < block; k++) {
        int bits = x[k];
        int e = (bits >> 10) & 31;
        int normal = (e > 0) & (e < EXP_FIELD_NONFINITE);
        nonfinite |= (e == EXP_FIELD_NONFINITE);
        sign[k] = bits >> 15;
        ex[k] = normal ? e : 0;
        sig[k] = normal ? ((bits & 1023) | SIGNIFICAND_HIDDEN) : 0;
        E = ex[k] > E ? ex[k] : E;
    }
    for (int k = 0; k < block; k++) {
        int shift = Q_SHIFT_BASE + E - ex[k];
        q[k] = shift > 15 ? 0 : sig[k] >> shift;
    }
    *bad = (uint8_t)nonfinite;
    return E;
}

static inline void write_codes(const int *sign, const int *q, int d, int block, uint8_t *codes)
{
    const uint8_t *lut = INDEX_LUT[d];
    for (int k = 0; k < block; k++)
        codes[k] = (uint8_t)((sign[k] << 3) | lut[q[k]]);
}

/* SPEC 4: online two-stage selection. rounding = 1: p = max(0, 15 - ((qmax + 1) >> 1));
   rounding = 0: p = 15 - (qmax >> 1), clamped to 0..7. A zero block (E = 0) takes dialect 0. */
static inline int select_two_stage(const int *q, int block, int E, int rounding)
{
    int qmax = 0;
    for (int k = 0; k < block; k++) qmax = q[k] > qmax ? q[k] : qmax;
    int p = rounding ? MAX_HALF_UNITS - ((qmax + 1) >> 1) : MAX_HALF_UNITS - (qmax >> 1);
    p = p < 0 ? 0 : (p > NUM_PAIRS - 1 ? NUM_PAIRS - 1 : p);
    int a = 2 * p;
    int loa = RANGES[a][0], hia = RANGES[a][1], lob = RANGES[a + 1][0], hib = RANGES[a + 1][1];
    int ca = 0, cb = 0;
    for (int k = 0; k < block; k++) {
        ca += (q[k] >= loa) & (q[k] < hia);
        cb += (q[k] >= lob) & (q[k] < hib);
    }
    return E == 0 ? 0 : a + (cb > ca);
}

/* SPEC 5: exact squared error of all 16 dialects over the elements with ex >= E - 1; the first
   minimum wins. Each term is below 2^24 and a block has at most 64, so int32 costs are exact. */
static inline int select_mse(const int *ex, const int *sig, const int *q, int block, int E)
{
    int32_t cost[NUM_DIALECTS] = {0};
    for (int k = 0; k < block; k++) {
        if (ex[k] < E - 1) continue;
        int32_t scaled = ex[k] >= E ? sig[k] << 1 : sig[k];
        const int32_t *v = VALUE_LUT[q[k]];
        for (int d = 0; d < NUM_DIALECTS; d++) {
            int32_t e = scaled - MSE_UNIT * v[d];
            cost[d] += e * e;
        }
    }
    int d = 0;
    for (int j = 1; j < NUM_DIALECTS; j++) if (cost[j] < cost[d]) d = j;
    return E == 0 ? 0 : d;
}

/* SPEC 1: float64 -> IEEE binary16 bits with one round-to-nearest-even (overflow to Inf,
   subnormals kept; a NaN stays a quiet NaN with its sign and top payload bits). */
static inline uint16_t fp16_bits(double x)
{
    uint64_t b, mag;
    memcpy(&b, &x, 8);
    mag = b & 0x7FFFFFFFFFFFFFFFULL;
    double a;
    memcpy(&a, &mag, 8);
    /* Normal results: round to nearest even at bit 42 (a carry moves into the exponent), rebias. */
    uint64_t rounded = mag + 0x1FFFFFFFFFFULL + ((mag >> 42) & 1);
    uint32_t normal = (uint32_t)(rounded >> 42) - ((1023u - 15u) << 10);
    /* Subnormal results: units of 2^-24 (exact scaling), rounded to nearest even by adding and
       subtracting 2^52; 1024 units become the least normal, 0x0400, as they should. */
    uint32_t sub = (uint32_t)((a * 0x1p24 + 0x1p52) - 0x1p52);
    uint32_t h = a < 0x1p-14 ? sub : normal;
    h = a >= 65520.0 ? 0x7C00u : h;                             /* overflow and Inf */
    h = a != a ? 0x7E00u | (uint32_t)((mag >> 42) & 0x3FF) : h;  /* NaN: quiet, top payload bits */
    return (uint16_t)(((b >> 48) & 0x8000) | h);
}

/* fake_quant.c: fused fake quantization (x_kind 0 float32, 1 float64, 2 FP16; out_double 0 float32,
   1 float64); each returns the number of non-finite inputs. */
int64_t bd_fake_fp16(const void *x, int x_kind, int64_t n, void *out, int out_double, int threads);
int64_t bd_fake_blockdialect(const void *x, int x_kind, int64_t nblocks, int block, int method,
                             void *out, int out_double, int threads);
int64_t bd_fake_mxfp4(const void *x, int x_kind, int64_t nblocks, int block, void *out, int out_double,
                      int threads);
int64_t bd_fake_int4(const void *x, int x_kind, int64_t nblocks, int block, void *out, int out_double,
                     int threads);

#endif
