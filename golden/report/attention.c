/* Causal attention in float64, for the report's forward passes (golden/report/attention.py loads it):
   softmax(Q K^T * scaling, causal) V per head, grouped-query heads reading their shared K and V, the
   probabilities optionally fake-quantized in blocks along the key dimension (prob_fmt: 0-2 the
   BlockDialect methods of bd_fake_blockdialect, 3 MXFP4, 4 INT4, 5 FP16). Each output element is one
   fixed chain of FMAs in index order and each row's softmax one fixed reduction, whatever the thread
   count, the batch or the CPU: AVX2 and FMA, which every x86-64 CPU since 2013 has; the caller falls
   back to torch's attention elsewhere. */
#include "bd_kernels.h"

#if defined(__GNUC__) && defined(__x86_64__) && !defined(BD_SCALAR_ONLY)
#include <stdlib.h>
#include <immintrin.h>
#define AVX2_FMA __attribute__((target("avx2,fma")))
#define ATT_ROWS 6          /* query rows of the register tile: 6 x 8 accumulators in 12 registers */
#define ATT_TILE 48         /* query rows whose scores are held at once */

/* exp(x) for x <= 0: x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite, the products exact by FMA), exp(r) by
   its Taylor series to r^13 / 13! (truncation below 2^-60), 2^n placed in the exponent. x < -708
   (a result below 2^-1021) gives 0, as does -Inf. */
AVX2_FMA static inline __m256d exp_nonpositive(__m256d x)
{
    static const double INV_FACTORIAL[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720,
        1.0 / 5040, 1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
        1.0 / 6227020800.0};
    __m256d n = _mm256_round_pd(_mm256_mul_pd(x, _mm256_set1_pd(1.4426950408889634)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256d r = _mm256_fnmadd_pd(n, _mm256_set1_pd(6.93147180369123816490e-01), x);
    r = _mm256_fnmadd_pd(n, _mm256_set1_pd(1.90821492927058770002e-10), r);
    __m256d p = _mm256_set1_pd(INV_FACTORIAL[13]);
    for (int i = 12; i >= 0; i--) p = _mm256_fmadd_pd(p, r, _mm256_set1_pd(INV_FACTORIAL[i]));
    __m256d keep = _mm256_cmp_pd(x, _mm256_set1_pd(-708.0), _CMP_GE_OQ);
    n = _mm256_max_pd(n, _mm256_set1_pd(-1021.0));
    __m256i e = _mm256_slli_epi64(_mm256_add_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n)),
                                                   _mm256_set1_epi64x(1023)), 52);
    return _mm256_and_pd(_mm256_mul_pd(p, _mm256_castsi256_pd(e)), keep);
}

/* A 64-byte aligned view of a malloc'ed buffer (free the returned base). */
static double *aligned_doubles(size_t count, void **base)
{
    *base = malloc(sizeof(double) * count + 64);
    return *base ? (double *)(((uintptr_t)*base + 63) & ~(uintptr_t)63) : NULL;
}

/* The probabilities of one row, in place: blocks [0, nblocks) (keys past the row are zero, so are
   the blocks after them). Returns the count of non-finite inputs. */
static int64_t quantize_probabilities(double *row, int64_t nblocks, int block, int prob_fmt)
{
    switch (prob_fmt) {
    case 0: case 1: case 2: return bd_fake_blockdialect(row, 1, nblocks, block, prob_fmt, row, 1, 1);
    case 3: return bd_fake_mxfp4(row, 1, nblocks, block, row, 1, 1);
    case 4: return bd_fake_int4(row, 1, nblocks, block, row, 1, 1);
    default: return bd_fake_fp16(row, 1, nblocks * block, row, 1, 1);
    }
}

/* The register tile of both products: acc[r][0..7] = sum over t < count of a[r * a_stride + t] times
   b[t * b_stride + 0..7], for r < ATT_ROWS, each element one FMA chain in t order; b 32-byte aligned. */
AVX2_FMA static inline void tile_product(const double *a, int64_t a_stride, const double *b, int64_t b_stride,
                                         int64_t count, __m256d acc[ATT_ROWS][2])
{
    for (int r = 0; r < ATT_ROWS; r++) acc[r][0] = acc[r][1] = _mm256_setzero_pd();
    for (int64_t t = 0; t < count; t++) {
        __m256d b0 = _mm256_load_pd(b + t * b_stride), b1 = _mm256_load_pd(b + t * b_stride + 4);
        for (int r = 0; r < ATT_ROWS; r++) {
            __m256d x = _mm256_broadcast_sd(a + r * a_stride + t);
            acc[r][0] = _mm256_fmadd_pd(x, b0, acc[r][0]);
            acc[r][1] = _mm256_fmadd_pd(x, b1, acc[r][1]);
        }
    }
}

/* One query head: rows [0, length) of q (row stride qs) against k and v packed as kt (dim x lp,
   keys contiguous) and vp (lp x dim). s: ATT_TILE x lp scores, qp: ATT_TILE x dim. Writes out rows
   (row stride os) and, if probs is not NULL, the probabilities (row stride length). Returns the
   count of non-finite scores or probability-quantizer inputs. */
AVX2_FMA static int64_t attention_head(const double *q, int64_t qs, const double *kt, const double *vp,
                                       int64_t length, int64_t lp, int dim, double scaling, int prob_fmt,
                                       int block, double *s, double *qp, double *out, int64_t os, double *probs)
{
    int64_t bad = 0;
    const __m256d scale = _mm256_set1_pd(scaling), magnitude = _mm256_castsi256_pd(_mm256_set1_epi64x(INT64_MAX));
    const __m256d inf = _mm256_set1_pd(INFINITY), lane = _mm256_setr_pd(0.0, 1.0, 2.0, 3.0);
    for (int64_t i0 = 0; i0 < length; i0 += ATT_TILE) {
        int rows = length - i0 < ATT_TILE ? (int)(length - i0) : ATT_TILE;
        int rows_p = (rows + ATT_ROWS - 1) / ATT_ROWS * ATT_ROWS;
        for (int r = 0; r < rows_p; r++)
            for (int d = 0; d < dim; d++) qp[r * dim + d] = r < rows ? q[(i0 + r) * qs + d] : 0.0;
        /* Scores of each register tile of rows against the keys up to its last row. */
        for (int r0 = 0; r0 < rows_p; r0 += ATT_ROWS) {
            int64_t keys = i0 + r0 + ATT_ROWS < length ? i0 + r0 + ATT_ROWS : length;
            for (int64_t j = 0; j < keys; j += 8) {
                __m256d acc[ATT_ROWS][2];
                tile_product(qp + r0 * dim, dim, kt + j, lp, dim, acc);
                for (int r = 0; r < ATT_ROWS; r++) {
                    _mm256_store_pd(s + (r0 + r) * lp + j, _mm256_mul_pd(acc[r][0], scale));
                    _mm256_store_pd(s + (r0 + r) * lp + j + 4, _mm256_mul_pd(acc[r][1], scale));
                }
            }
        }
        /* Softmax of row i over keys [0, i]: the maximum, exp(s - max) summed in 4 lanes, then
           divided by the sum; quantized in the blocks that hold keys [0, i]; zeros after them. */
        for (int r = 0; r < rows; r++) {
            double *row = s + r * lp;
            int64_t valid = i0 + r + 1, valid4 = (valid + 3) / 4 * 4;
            for (int64_t j = valid; j < valid4; j++) row[j] = -INFINITY;
            __m256d m = _mm256_set1_pd(-INFINITY), nonfinite = _mm256_setzero_pd();
            for (int64_t j = 0; j < valid4; j += 4) {
                __m256d x = _mm256_load_pd(row + j);
                m = _mm256_max_pd(m, x);
                /* Inf or NaN among the row's scores (not the -Inf padding after them). */
                __m256d real = _mm256_cmp_pd(lane, _mm256_set1_pd((double)(valid - j)), _CMP_LT_OQ);
                nonfinite = _mm256_or_pd(nonfinite, _mm256_and_pd(real,
                    _mm256_cmp_pd(_mm256_and_pd(x, magnitude), inf, _CMP_NLT_UQ)));
            }
            bad += _mm256_movemask_pd(nonfinite) != 0;
            double lanes[4];
            _mm256_storeu_pd(lanes, m);
            __m256d top = _mm256_set1_pd(fmax(fmax(lanes[0], lanes[1]), fmax(lanes[2], lanes[3])));
            __m256d sum = _mm256_setzero_pd();
            for (int64_t j = 0; j < valid4; j += 4) {
                __m256d e = exp_nonpositive(_mm256_sub_pd(_mm256_load_pd(row + j), top));
                _mm256_store_pd(row + j, e);
                sum = _mm256_add_pd(sum, e);
            }
            _mm256_storeu_pd(lanes, sum);
            __m256d total = _mm256_set1_pd((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]));
            for (int64_t j = 0; j < valid4; j += 4)
                _mm256_store_pd(row + j, _mm256_div_pd(_mm256_load_pd(row + j), total));
            int64_t written = valid4;
            if (prob_fmt >= 0) {
                int64_t nblocks = (valid + block - 1) / block;
                for (int64_t j = valid4; j < nblocks * block; j++) row[j] = 0.0;
                bad += quantize_probabilities(row, nblocks, block, prob_fmt);
                written = nblocks * block;
            }
            /* Zeros up to the last key of the row's register tile, which the product below reads. */
            int64_t end = i0 + rows_p < length ? i0 + rows_p : length;
            for (int64_t j = written; j < end; j++) row[j] = 0.0;
            if (probs) memcpy(probs + (i0 + r) * length, row, sizeof(double) * (prob_fmt >= 0 ? written : valid));
        }
        /* Output of each register tile of rows: probabilities times V over the keys up to its last row. */
        for (int r0 = 0; r0 < rows; r0 += ATT_ROWS) {
            int64_t keys = i0 + r0 + ATT_ROWS < length ? i0 + r0 + ATT_ROWS : length;
            int live = rows - r0 < ATT_ROWS ? rows - r0 : ATT_ROWS;
            for (int c = 0; c < dim; c += 8) {
                __m256d acc[ATT_ROWS][2];
                tile_product(s + r0 * lp, lp, vp + c, dim, keys, acc);
                for (int r = 0; r < live; r++) {
                    _mm256_storeu_pd(out + (i0 + r0 + r) * os + c, acc[r][0]);
                    _mm256_storeu_pd(out + (i0 + r0 + r) * os + c + 4, acc[r][1]);
                }
            }
        }
    }
    return bad;
}
#endif

/* q: (batch, heads, length, dim), k and v: (batch, kv_heads, length, dim), each with element strides
   over its first three dimensions and dim contiguous; out: (batch, length, heads, dim) contiguous;
   probs: NULL or (batch, heads, length, length) zeros, to receive the probabilities. Returns 0, -1
   when this kernel does not serve the call (no AVX2/FMA, dim not a multiple of 8, length not a
   multiple of the block), -2 when memory runs out, or the count of non-finite scores (the caller
   then runs its reference, which reports them). */
int64_t bd_attention_f64(const double *q, const int64_t *qst, const double *k, const int64_t *kst,
                         const double *v, const int64_t *vst, int64_t batch, int heads, int kv_heads,
                         int64_t length, int dim, double scaling, int prob_fmt, int block, double *out,
                         double *probs, int threads)
{
#if defined(__GNUC__) && defined(__x86_64__) && !defined(BD_SCALAR_ONLY)
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma") || dim % 8 || heads % kv_heads
        || (prob_fmt >= 0 && length % block))
        return -1;
    int groups = heads / kv_heads;
    int64_t lp = (length + 7) / 8 * 8, bad = 0, failed = 0;
    #pragma omp parallel num_threads(threads) if (threads > 1) reduction(+:bad) reduction(+:failed)
    {
        void *bases[4];
        double *kt = aligned_doubles((size_t)dim * lp, &bases[0]);
        double *vp = aligned_doubles((size_t)lp * dim, &bases[1]);
        double *s = aligned_doubles((size_t)ATT_TILE * lp, &bases[2]);
        double *qp = aligned_doubles((size_t)ATT_TILE * dim, &bases[3]);
        int ready = kt && vp && s && qp;
        failed += !ready;
        #pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < batch * heads; item++) {
            if (!ready) continue;
            int64_t b = item / heads;
            int h = (int)(item % heads), g = h / groups;
            const double *kb = k + b * kst[0] + g * kst[1], *vb = v + b * vst[0] + g * vst[1];
            for (int64_t j = 0; j < lp; j++)
                for (int d = 0; d < dim; d++) {
                    kt[d * lp + j] = j < length ? kb[j * kst[2] + d] : 0.0;
                    vp[j * dim + d] = j < length ? vb[j * vst[2] + d] : 0.0;
                }
            bad += attention_head(q + b * qst[0] + h * qst[1], qst[2], kt, vp, length, lp, dim, scaling,
                                  prob_fmt, block, s, qp, out + (b * length * heads + h) * dim,
                                  (int64_t)heads * dim, probs ? probs + (b * heads + h) * length * length : NULL);
        }
        for (int i = 0; i < 4; i++) free(bases[i]);
    }
    return failed ? -2 : bad;
#else
    (void)q; (void)qst; (void)k; (void)kst; (void)v; (void)vst; (void)batch; (void)heads; (void)kv_heads;
    (void)length; (void)dim; (void)scaling; (void)prob_fmt; (void)block; (void)out; (void)probs; (void)threads;
    return -1;
#endif
}
