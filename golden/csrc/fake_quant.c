/* Fused fake quantization of golden.baselines.fake_quantize, every format (SPEC 1, 3-5, 8), in one
   pass per block; golden/baselines.py and golden/bd.py are the reference. */
#include "bd_kernels.h"

/* 2^k for k in the double's normal range, from its fields. */
static inline double pow2(int k)
{
    uint64_t bits = (uint64_t)(k + 1023) << 52;
    double v;
    memcpy(&v, &bits, 8);
    return v;
}

/* The value of FP16 bits, exactly: a normal's fields placed in a double's (Inf and NaN too), a
   subnormal scaled by 2^-24; the sign is or-ed in (a branch on it would be mispredicted half the
   time). */
static inline double fp16_value(uint16_t h)
{
    int e = (h >> 10) & 31;
    uint64_t m = h & 1023, bits;
    if (e) {
        bits = ((uint64_t)(e == 31 ? 2047 : e - 15 + 1023) << 52) | (m << 42);
    } else {
        double v = (double)m * 0x1p-24;
        memcpy(&bits, &v, 8);
    }
    bits |= (uint64_t)(h >> 15) << 63;
    double v;
    memcpy(&v, &bits, 8);
    return v;
}

/* Round half to even of |y| < 2^52 in the default rounding mode, without a libm call: adding and
   subtracting 2^52 leaves no fraction bits. The sign is kept (-0.0 included). */
static inline double round_half_even(double y)
{
    double a = fabs(y);
    return copysign((a + 0x1p52) - 0x1p52, y);
}

/* ---- Fused fake quantization: FP16, float32 or float64 in (x_kind 2, 0, 1: every value exact in
   a double), dequantized values out in float32 or float64, in one pass. Every output is an FP32
   number, so both output types hold it exactly. Each returns the number of non-finite inputs
   (after the format's input conversion); the caller then takes the reference path, which raises
   the error. */

static inline double load(const void *x, int x_kind, int64_t i)
{
    return x_kind == 1 ? ((const double *)x)[i]
         : x_kind == 0 ? (double)((const float *)x)[i] : fp16_value(((const uint16_t *)x)[i]);
}

/* SPEC 1: element i as FP16 bits, rounded once (FP16 input: its own bits). */
static inline uint16_t load_fp16_bits(const void *x, int x_kind, int64_t i)
{
    return x_kind == 2 ? ((const uint16_t *)x)[i] : fp16_bits(load(x, x_kind, i));
}

static inline void store(void *out, int out_double, int64_t i, double v)
{
    if (out_double) ((double *)out)[i] = v;
    else ((float *)out)[i] = (float)v;
}

/* Whether every element of the block at x[base:base + block] is +0.0 or -0.0 (the masked half of
   causal attention probabilities is): each format keeps those zeros as they are (NVFP4 gives +0.0),
   so the block needs no further work. */
static inline int block_is_zero(const void *x, int x_kind, int64_t base, int block)
{
    uint64_t any = 0;
    if (x_kind == 1) {
        const uint64_t *b = (const uint64_t *)x + base;
        for (int k = 0; k < block; k++) any |= b[k] << 1;
    } else if (x_kind == 0) {
        const uint32_t *b = (const uint32_t *)x + base;
        for (int k = 0; k < block; k++) any |= (uint32_t)(b[k] << 1);
    } else {
        const uint16_t *b = (const uint16_t *)x + base;
        for (int k = 0; k < block; k++) any |= (uint16_t)(b[k] << 1);
    }
    return any == 0;
}

static inline void copy_zero_block(const void *x, int x_kind, int64_t base, int block, void *out, int out_double)
{
    for (int k = 0; k < block; k++) store(out, out_double, base + k, load(x, x_kind, base + k));
}


/* SPEC 1: one rounding to FP16 and back. */
MULTIVERSION
int64_t bd_fake_fp16(const void *x, int x_kind, int64_t n, void *out, int out_double, int threads)
{
    int64_t bad = 0;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1) reduction(+:bad)
    for (int64_t i = 0; i < n; i++) {
        uint16_t h = load_fp16_bits(x, x_kind, i);
        bad += ((h >> 10) & 31) == 31;
        store(out, out_double, i, fp16_value(h));
    }
    return bad;
}

/* SPEC 1, 3-5: FP16 rounding, selection (method 0: two-stage rounding stage 1, 1: truncating,
   2: MSE) and the decode of bd_dequantize, block by block. */
MULTIVERSION
int64_t bd_fake_blockdialect(const void *x, int x_kind, int64_t nblocks, int block, int method,
                             void *out, int out_double, int threads)
{
    int64_t bad = 0;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1) reduction(+:bad)
    for (int64_t b = 0; b < nblocks; b++) {
        uint16_t h[MAX_BLOCK];
        int sign[MAX_BLOCK], ex[MAX_BLOCK], sig[MAX_BLOCK], q[MAX_BLOCK];
        int64_t base = b * block;
        if (block_is_zero(x, x_kind, base, block)) {
            copy_zero_block(x, x_kind, base, block, out, out_double);
            continue;
        }
        for (int k = 0; k < block; k++) h[k] = load_fp16_bits(x, x_kind, base + k);
        uint8_t nonfinite;
        int E = block_fields(h, block, sign, ex, sig, q, &nonfinite);
        bad += nonfinite;
        int d = method == 2 ? select_mse(ex, sig, q, block, E) : select_two_stage(q, block, E, method == 0);
        /* bd_dequantize's table: code (sign << 3 | index) -> value. */
        double scale = pow2(E - DECODE_EXP_OFFSET), table[16];
        const int32_t *book = BOOK[d];
        for (int i = 0; i < 8; i++) {
            table[i] = (double)book[i] * scale;
            table[i + 8] = -table[i];
        }
        const uint8_t *lut = INDEX_LUT[d];
        for (int k = 0; k < block; k++)
            store(out, out_double, base + k, table[(sign[k] << 3) | lut[q[k]]]);
    }
    return bad;
}

/* SPEC 8: nearest E2M1 value of an exact quotient, ties to even, clamped at +-6 (the spacing is
   0.5 below 2, 1 below 4 and 2 above, so rounding half to even at that spacing keeps E2M1's ties). */
static inline double round_e2m1(double s)
{
    static const double STEP[3] = {0.5, 1.0, 2.0}, INV_STEP[3] = {2.0, 1.0, 0.5};
    double mag = fabs(s);
    mag = mag > 8.0 ? 8.0 : mag;                   /* beyond 7 every value clamps to 6 */
    int range = (mag >= 2.0) + (mag >= 4.0);
    double r = round_half_even(mag * INV_STEP[range]) * STEP[range];   /* powers of two: exact */
    return copysign(r > E2M1_MAX ? E2M1_MAX : r, s);
}

/* SPEC 8's input: a block rounded to FP32 into v; returns its largest |v| and adds the non-finite
   elements to *bad. */
static inline float load_fp32_block(const void *x, int x_kind, int64_t base, int block, float *v, int64_t *bad)
{
    float amax = 0.0f;
    for (int k = 0; k < block; k++) {
        v[k] = (float)load(x, x_kind, base + k);
        float a = fabsf(v[k]);
        *bad += !isfinite(a);
        amax = a > amax ? a : amax;
    }
    return amax;
}

/* SPEC 8: NVFP4, pass 1: the largest |x| in FP32 (the tensor scale's amax) and the non-finite count. */
int64_t bd_abs_max_fp32(const void *x, int x_kind, int64_t n, float *amax_out, int threads)
{
    float amax = 0.0f;
    int64_t bad = 0;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1) reduction(+:bad) reduction(max:amax)
    for (int64_t i = 0; i < n; i++) {
        float a = fabsf((float)load(x, x_kind, i));
        bad += !isfinite(a);
        amax = a > amax ? a : amax;
    }
    *amax_out = amax;
    return bad;
}

/* E4M3 (fn) value of a float in [0, 448], round to nearest even, subnormals (step 2^-9) kept. */
static inline double round_e4m3(float v)
{
    if (v < 0x1p-6f) return round_half_even((double)v * 512.0) / 512.0;
    int e;
    frexpf(v, &e);                                 /* v = f * 2^e, f in [0.5, 1) */
    double step = pow2(e - 4);                     /* 3 fraction bits below the leading one */
    return round_half_even((double)v / step) * step;
}

/* SPEC 8: NVFP4, pass 2, with the tensor's amax from pass 1 (non-zero). Returns 1, writing
   nothing, when the FP32 tensor scale underflows to 0: the reference decides that case (its
   all-zero blocks then come out NaN). */
int64_t bd_fake_nvfp4(const void *x, int x_kind, int64_t nblocks, float tensor_amax, void *out, int out_double,
                      int threads)
{
    const int block = NVFP4_BLOCK;
    float tensor_scale = tensor_amax / (float)(E4M3_MAX * E2M1_MAX);
    if (tensor_scale == 0.0f) return 1;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t b = 0; b < nblocks; b++) {
        int64_t base = b * block;
        if (block_is_zero(x, x_kind, base, block)) {
            for (int k = 0; k < block; k++) store(out, out_double, base + k, 0.0);
            continue;
        }
        float v[NVFP4_BLOCK];
        int64_t nonfinite = 0;                     /* pass 1 has counted them */
        float amax = load_fp32_block(x, x_kind, base, block, v, &nonfinite);
        float scale32 = (amax / (float)E2M1_MAX) / tensor_scale;
        scale32 = scale32 > (float)E4M3_MAX ? (float)E4M3_MAX : scale32;
        double full = round_e4m3(scale32) * (double)tensor_scale;   /* exact: 4 x 24 bits */
        for (int k = 0; k < block; k++)
            store(out, out_double, base + k, full > 0.0 ? (double)(float)(round_e2m1((double)v[k] / full) * full) : 0.0);
    }
    return 0;
}

/* SPEC 8: MXFP4 of one block, read as FP32 with its amax. Scale 2^(floor(log2 amax) - 2) from
   amax's FP32 exponent field, clamped to the E8M0 range. */
static inline void mxfp4_block(const float *v, float amax, int block, void *out, int out_double, int64_t base)
{
    uint32_t bits;
    memcpy(&bits, &amax, 4);
    int s = (int)((bits >> 23) & 0xFF) - 127 - E2M1_EMAX;
    s = s < E8M0_MIN_EXP ? E8M0_MIN_EXP : (s > E8M0_MAX_EXP ? E8M0_MAX_EXP : s);
    for (int k = 0; k < block; k++)
        store(out, out_double, base + k, (double)(float)(round_e2m1((double)v[k] * pow2(-s)) * pow2(s)));
}

/* SPEC 8: INT4 of one block, read as FP32 with its amax. Scale amax / 7 in FP32, clamped to 65504
   and rounded to FP16, at least 2^-24; levels round half to even on the exact quotient, clamped to
   +-7. */
static inline void int4_block(const float *v, float amax, int block, void *out, int out_double, int64_t base)
{
    float scale32 = amax / (float)INT4_LEVELS;
    scale32 = scale32 > (float)FP16_MAX ? (float)FP16_MAX : scale32;
    double scale = fp16_value(fp16_bits((double)scale32));
    scale = amax > 0.0f ? (scale < INT4_SCALE_MIN ? INT4_SCALE_MIN : scale) : 1.0;
    for (int k = 0; k < block; k++) {
        double y = (double)v[k] / scale;
        y = y > 8.0 ? 8.0 : (y < -8.0 ? -8.0 : y);  /* beyond 7.5 every level clamps to 7 */
        double level = round_half_even(y);
        level = level > INT4_LEVELS ? INT4_LEVELS : (level < -INT4_LEVELS ? -INT4_LEVELS : level);
        store(out, out_double, base + k, (double)(float)(level * scale));
    }
}

/* The block formats with one scale from the block's FP32 amax (int4 = 0: MXFP4, 1: INT4): input
   rounded to FP32 block by block, all-zero blocks passed through. */
static int64_t fake_fp32_scaled(const void *x, int x_kind, int64_t nblocks, int block, int int4, void *out,
                                int out_double, int threads)
{
    int64_t bad = 0;
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1) reduction(+:bad)
    for (int64_t b = 0; b < nblocks; b++) {
        float v[MAX_BLOCK];
        int64_t base = b * block;
        if (block_is_zero(x, x_kind, base, block)) {
            copy_zero_block(x, x_kind, base, block, out, out_double);
            continue;
        }
        float amax = load_fp32_block(x, x_kind, base, block, v, &bad);
        if (int4) int4_block(v, amax, block, out, out_double, base);
        else mxfp4_block(v, amax, block, out, out_double, base);
    }
    return bad;
}

int64_t bd_fake_mxfp4(const void *x, int x_kind, int64_t nblocks, int block, void *out, int out_double,
                      int threads)
{
    return fake_fp32_scaled(x, x_kind, nblocks, block, 0, out, out_double, threads);
}

int64_t bd_fake_int4(const void *x, int x_kind, int64_t nblocks, int block, void *out, int out_double,
                     int threads)
{
    return fake_fp32_scaled(x, x_kind, nblocks, block, 1, out, out_double, threads);
}
