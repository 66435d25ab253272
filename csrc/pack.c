/* pack.c: packed weights (LL_LAYOUT_PACKED8): packing GGUF rows in place
 * into groups of 8 interleaved rows, and the scalar kernels over them.
 *
 * Why: prompt processing multiplies every weight block with hundreds of
 * activation rows. A row-by-row dot ends each block with a float conversion
 * and a multiply-add per row (its 8 lanes are partial sums of one row), and
 * keeps a row's total in 8 lanes until a horizontal sum. With 8 rows
 * interleaved 4 bytes at a time, one 32-byte load holds 4 elements of each
 * row; an activation's 4 bytes broadcast to all lanes make each lane the dot
 * of one row, and the block's float step serves 8 rows at once. For Q5_0 that
 * is about a third of the instructions per weight block.
 *
 * The arithmetic of a packed dot is defined here, for every ISA alike: per
 * block the exact integer dot, then acc = fma(float(dot), d_w * d_y, acc),
 * block after block (d_w * d_y is exact in float: two float16 significands).
 * So the scalar kernels below give the SIMD ones' bits, and a row gives the
 * same result alone or in a batch. */
#include <math.h>
#include <stdlib.h>
#include "quants.h"

/* ---- the nibbles of the 32-element types (Q5_0's low four bits, Q4_1) ------- */

/* Row r's 16 bytes of nibbles, src, into a packed block's qs: qs[j][4r + i] =
 * src[4j + i] (block_q5_0x8 and block_q4_1x8 share this layout). */
static void pack_nibbles(uint8_t qs[4][32], int r, const uint8_t src[16]) {
    for (int j = 0; j < 4; j++) memcpy(&qs[j][4 * r], &src[4 * j], 4);
}

/* row r's nibble of element e (0..31) in such qs: element 4k + i sits in
 * qs[k % 4][4r + i], low nibble for k < 4 */
static int packed_nibble(const uint8_t qs[4][32], int r, int e) {
    const uint8_t byte = qs[e / 4 % 4][4 * r + e % 4];
    return e < 16 ? byte & 0x0f : byte >> 4;
}

/* ---- Q5_0 ------------------------------------------------------------------ */

/* bits 0, 4, 8, .., 28 of x as bits 0..7: pairs, then fours, then all eight */
static uint8_t every_fourth_bit(uint32_t x) {
    x &= 0x11111111u;
    x = (x | x >> 3) & 0x03030303u;
    x = (x | x >> 6) & 0x000f000fu;
    return (uint8_t)(x | x >> 12);
}

static void pack_q5_0(const uint8_t *rows, size_t row_bytes, uint8_t *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        block_q5_0x8 *p = (block_q5_0x8 *)dst + b;
        for (int r = 0; r < 8; r++) {
            const block_q5_0 *x = (const block_q5_0 *)(rows + r * row_bytes) + b;
            uint32_t qh;
            memcpy(&qh, x->qh, 4);
            p->d[r] = x->d;
            pack_nibbles(p->qs, r, x->qs);
            for (int i = 0; i < 4; i++) p->qh[4 * r + i] = every_fourth_bit(qh >> i);
        }
    }
}

/* row r's unsigned 5-bit quant of element e (0..31) in a packed block */
static int q5_0x8_quant(const block_q5_0x8 *p, int r, int e) {
    return packed_nibble(p->qs, r, e) | ((p->qh[4 * r + e % 4] >> (e / 4)) & 1) << 4;
}

static void gemm8_q5_0_scalar(int64_t n, float *s, int64_t s_stride, const void *vx,
                              const void *vy, size_t y_stride, int n_y) {
    const block_q5_0x8 *x = vx;
    for (int a = 0; a < n_y; a++) {
        const block_q8_0p *y = (const block_q8_0p *)((const uint8_t *)vy + a * y_stride);
        for (int r = 0; r < 8; r++) {
            float acc = 0.0f;
            for (int64_t b = 0; b < n / QK5_0; b++) {
                int32_t dot = 0;
                for (int e = 0; e < QK5_0; e++) dot += q5_0x8_quant(&x[b], r, e) * y[b].qs[e];
                dot -= 16 * y[b].sum;
                acc = fmaf((float)dot, ll_half_to_f32(x[b].d[r]) * y[b].d, acc);
            }
            s[a * s_stride + r] = acc;
        }
    }
}

/* ---- Q4_1 ------------------------------------------------------------------ */

static void pack_q4_1(const uint8_t *rows, size_t row_bytes, uint8_t *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        block_q4_1x8 *p = (block_q4_1x8 *)dst + b;
        for (int r = 0; r < 8; r++) {
            const block_q4_1 *x = (const block_q4_1 *)(rows + r * row_bytes) + b;
            p->d[r] = x->d;
            p->m[r] = x->m;
            pack_nibbles(p->qs, r, x->qs);
        }
    }
}

/* w = d * q + m: d * d_y * sum(q * y), then m * s_y, each in its own accumulator */
static void gemm8_q4_1_scalar(int64_t n, float *s, int64_t s_stride, const void *vx,
                              const void *vy, size_t y_stride, int n_y) {
    const block_q4_1x8 *x = vx;
    for (int a = 0; a < n_y; a++) {
        const block_q8_1p *y = (const block_q8_1p *)((const uint8_t *)vy + a * y_stride);
        for (int r = 0; r < 8; r++) {
            float acc = 0.0f, acc_m = 0.0f;
            for (int64_t b = 0; b < n / QK4_1; b++) {
                int32_t dot = 0;
                for (int e = 0; e < QK4_1; e++) dot += packed_nibble(x[b].qs, r, e) * y[b].qs[e];
                acc = fmaf((float)dot, ll_half_to_f32(x[b].d[r]) * y[b].d, acc);
                acc_m = fmaf(ll_half_to_f32(x[b].m[r]), y[b].s, acc_m);
            }
            s[a * s_stride + r] = acc + acc_m;
        }
    }
}

/* ---- Q4_K ------------------------------------------------------------------ */

static void pack_q4_K(const uint8_t *rows, size_t row_bytes, uint8_t *dst, int64_t nb) {
    for (int64_t b = 0; b < nb; b++) {
        block_q4_Kx8 *p = (block_q4_Kx8 *)dst + b;
        memset(p->sm, 0, sizeof p->sm);
        memset(p->m_lo, 0, sizeof p->m_lo);
        for (int r = 0; r < 8; r++) {
            const block_q4_K *x = (const block_q4_K *)(rows + r * row_bytes) + b;
            p->d[r] = x->d;
            p->dmin[r] = x->dmin;
            for (int sb = 0; sb < 8; sb++) {
                int sc, m;
                ll_k4_scale_min(x->scales, sb, &sc, &m);
                const int v = 16 * (sb / 2) + 2 * r + sb % 2;
                p->sm[8 * sb + r] |= (uint8_t)sc;
                p->sm[v] |= (uint8_t)(m >> 4 << 6);   /* beside another row's scale */
                p->m_lo[v % 32] |= (uint8_t)((m & 0x0f) << (v < 32 ? 0 : 4));
            }
            for (int j = 0; j < 4; j++)
                for (int k = 0; k < 8; k++) memcpy(p->qs[j][k] + 4 * r, x->qs + 32 * j + 4 * k, 4);
        }
    }
}

static void gemm8_q4_K_scalar(int64_t n, float *s, int64_t s_stride, const void *vx,
                              const void *vy, size_t y_stride, int n_y) {
    const block_q4_Kx8 *x = vx;
    for (int a = 0; a < n_y; a++) {
        const block_q8_K *y = (const block_q8_K *)((const uint8_t *)vy + a * y_stride);
        for (int r = 0; r < 8; r++) {
            float acc = 0.0f, acc_m = 0.0f;
            for (int64_t b = 0; b < n / QK_K; b++) {
                const block_q4_Kx8 *p = &x[b];
                int32_t dot = 0, mins = 0;
                for (int sb = 0; sb < 8; sb++) {
                    int32_t sub = 0;
                    for (int e = 0; e < 32; e++) {
                        const int k = e / 4, i = e % 4;
                        const uint8_t byte = p->qs[sb / 2][k][4 * r + i];
                        sub += (sb % 2 ? byte >> 4 : byte & 0x0f) * y[b].qs[32 * sb + e];
                    }
                    const int v = 16 * (sb / 2) + 2 * r + sb % 2;
                    const int m = (p->m_lo[v % 32] >> (v < 32 ? 0 : 4) & 0x0f) | (p->sm[v] >> 6) << 4;
                    dot += (p->sm[8 * sb + r] & 63) * sub;
                    mins += m * (y[b].bsums[2 * sb] + y[b].bsums[2 * sb + 1]);
                }
                acc = fmaf((float)dot, ll_half_to_f32(p->d[r]) * y[b].d, acc);
                acc_m = fmaf((float)mins, ll_half_to_f32(p->dmin[r]) * y[b].d, acc_m);
            }
            s[a * s_stride + r] = acc - acc_m;
        }
    }
}

/* ---- the table and the entry points ------------------------------------------ */

typedef void (*pack_fn)(const uint8_t *rows, size_t row_bytes, uint8_t *dst, int64_t nb);

static const struct {
    int type, act_type;
    pack_fn pack;
    ll_gemm8_fn scalar;
} packed_types[] = {
    { LL_TYPE_Q5_0, LL_TYPE_Q8_0P, pack_q5_0, gemm8_q5_0_scalar },
    { LL_TYPE_Q4_K, LL_TYPE_Q8_K, pack_q4_K, gemm8_q4_K_scalar },
    { LL_TYPE_Q4_1, LL_TYPE_Q8_1P, pack_q4_1, gemm8_q4_1_scalar },
};
#define N_PACKED (sizeof packed_types / sizeof packed_types[0])

static int packed_index(int type) {
    for (size_t i = 0; i < N_PACKED; i++)
        if (packed_types[i].type == type) return (int)i;
    return -1;
}

int ll_packed_act_type(int type) {
    const int i = packed_index(type);
    return i < 0 ? -1 : packed_types[i].act_type;
}

void ll_fill_packed_scalar(ll_kernels *k) {
    for (size_t i = 0; i < N_PACKED; i++) k->gemm8[packed_types[i].type] = packed_types[i].scalar;
}

int ll_pack_preferred(int type, int64_t rows, int64_t cols) {
    if (packed_index(type) < 0 || !ll_active->pack_faster[type] || rows <= 0 || rows % 8)
        return 0;
    return cols > 0 && cols % ll_traits[type].blck_size == 0;
}

int ll_pack(int type, void *data, size_t nbytes, int64_t rows, int64_t cols) {
    const int i = packed_index(type);
    if (i < 0)
        return ll_error(LL_ERR_UNSUPPORTED, "no packed layout for tensor type %d", type);
    if (rows <= 0 || rows % 8)
        return ll_error(LL_ERR_ARG, "packing takes rows in groups of 8, got %lld rows",
                        (long long)rows);
    if (cols <= 0)
        return ll_error(LL_ERR_ARG, "packing needs rows of at least one block, got %lld columns",
                        (long long)cols);
    const int64_t rb = ll_row_bytes(type, cols);
    if (rb <= 0) return LL_ERR_ARG; /* the error names the block size */
    if (!data || rows > INT64_MAX / rb || (uint64_t)(rows * rb) != (uint64_t)nbytes)
        return ll_error(LL_ERR_ARG, "%zu bytes given for %lld x %lld %s", nbytes,
                        (long long)rows, (long long)cols, ll_traits[type].name);
    uint8_t *group = malloc((size_t)(8 * rb));
    if (!group) return ll_error(LL_ERR_NOMEM, "no memory for 8 rows of %lld bytes", (long long)rb);
    for (int64_t g = 0; g < rows / 8; g++) {
        uint8_t *at = (uint8_t *)data + g * 8 * rb;
        memcpy(group, at, (size_t)(8 * rb));
        packed_types[i].pack(group, (size_t)rb, at, cols / ll_traits[type].blck_size);
    }
    free(group);
    return LL_OK;
}
