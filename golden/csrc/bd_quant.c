/* SPEC 3-6 on the CPU: quantize (two-stage with either stage-1 rule, MSE), dequantize, the window
   decode of the exact linear product, and SPEC 1's float64 -> FP16 rounding; block by block, split
   over OpenMP threads when built with it. The eager torch code of golden/bd.py is the reference. */
#include "bd_kernels.h"

MULTIVERSION
void bd_quantize_two_stage(const uint16_t *x, int64_t nblocks, int block, int rounding,
                           uint8_t *exp, uint8_t *dialect, uint8_t *codes, uint8_t *invalid, int threads)
{
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t b = 0; b < nblocks; b++) {
        int sign[MAX_BLOCK], ex[MAX_BLOCK], sig[MAX_BLOCK], q[MAX_BLOCK];
        int E = block_fields(x + b * block, block, sign, ex, sig, q, invalid + b);
        int d = select_two_stage(q, block, E, rounding);
        exp[b] = (uint8_t)E;
        dialect[b] = (uint8_t)d;
        write_codes(sign, q, d, block, codes + b * block);
    }
}

MULTIVERSION
void bd_quantize_mse(const uint16_t *x, int64_t nblocks, int block,
                     uint8_t *exp, uint8_t *dialect, uint8_t *codes, uint8_t *invalid, int threads)
{
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t b = 0; b < nblocks; b++) {
        int sign[MAX_BLOCK], ex[MAX_BLOCK], sig[MAX_BLOCK], q[MAX_BLOCK];
        int E = block_fields(x + b * block, block, sign, ex, sig, q, invalid + b);
        int d = select_mse(ex, sig, q, block, E);
        exp[b] = (uint8_t)E;
        dialect[b] = (uint8_t)d;
        write_codes(sign, q, d, block, codes + b * block);
    }
}

/* SPEC 3: (-1)^s * FORMATBOOK[d][idx] * 2^(E - 18) in FP32; a block flagged invalid gives NaN
   when nan_invalid is set. */
void bd_dequantize(const uint8_t *exp, const uint8_t *dialect, const uint8_t *codes,
                   const uint8_t *invalid, int nan_invalid, int64_t nblocks, int block, float *out,
                   int threads)
{
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t b = 0; b < nblocks; b++) {
        float table[16];
        float scale = ldexpf(1.0f, (int)exp[b] - DECODE_EXP_OFFSET);
        const int32_t *book = BOOK[dialect[b] & 15];
        for (int i = 0; i < 8; i++) {
            float m = (float)book[i] * scale;
            table[i] = m;
            table[i + 8] = -m;
        }
        if (nan_invalid && invalid[b])
            for (int i = 0; i < 16; i++) table[i] = NAN;
        const uint8_t *cb = codes + b * block;
        float *ob = out + b * block;
        for (int k = 0; k < block; k++) ob[k] = table[cb[k] & 15];
    }
}

/* SPEC 6 decode for the exact linear product: element (r, b, k) becomes
   (-1)^s * h * 2^(lo + width - 1 - (top[r] - E)) when top[r] - E lies in [lo, lo + width), else 0. */
void bd_decode_window(const uint8_t *exp, const uint8_t *dialect, const uint8_t *codes,
                      const int64_t *top, int64_t rows, int64_t nblocks, int block,
                      int lo, int width, double *out)
{
    double table[16];
    for (int64_t r = 0; r < rows; r++) {
        for (int64_t b = 0; b < nblocks; b++) {
            int64_t i = r * nblocks + b;
            int down = (int)(top[r] - exp[i]);
            double *ob = out + i * block;
            if (down < lo || down >= lo + width) {
                memset(ob, 0, sizeof(double) * block);
                continue;
            }
            double scale = ldexp(1.0, lo + width - 1 - down);
            const int32_t *book = BOOK[dialect[i] & 15];
            for (int j = 0; j < 8; j++) {
                table[j] = (double)book[j] * scale;
                table[j + 8] = -table[j];
            }
            const uint8_t *cb = codes + i * block;
            for (int k = 0; k < block; k++) ob[k] = table[cb[k] & 15];
        }
    }
}

MULTIVERSION
void bd_float64_to_fp16(const double *x, int64_t n, uint16_t *out, int threads)
{
    #pragma omp parallel for num_threads(threads) schedule(static) if (threads > 1)
    for (int64_t i = 0; i < n; i++) out[i] = fp16_bits(x[i]);
}

/* Whether the kernels below split their loop over OpenMP threads themselves. */
int bd_openmp(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}
