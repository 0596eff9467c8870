/* Helpers of the dsp conv / depthwise kernels (Armv7E-M / Armv8-M DSP
 * extension). Only included where KL_KERNELS_DSP is 1. Scratch layouts stay
 * within kl_conv_s8_scratch() (kl_kernels.h). */
#ifndef KL_DSP_CONV_H
#define KL_DSP_CONV_H

#include "kl_dsp_util.h"

static inline int kl_round4(int n)
{
	return (n + 3) & ~3;
}

/* top halfword of a, top halfword of b at the bottom: PKHTB a, b, ASR #16.
 * With a = (a0, a1), b = (b0, b1) as int16 lanes (low, high): (b1, a1). */
static inline uint32_t kl_pkhtb(uint32_t a, uint32_t b)
{
	uint32_t r;
	__asm__("pkhtb %0, %1, %2, asr #16" : "=r"(r) : "r"(a), "r"(b));
	return r;
}

static inline uint32_t kl_uxtb16_ror8(uint32_t v)
{
	uint32_t r;
	__asm__("uxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
	return r;
}

static inline int32_t kl_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
	return __smlabb((int32_t)a, (int32_t)b, acc);
}

static inline int32_t kl_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
	return __smlatt((int32_t)a, (int32_t)b, acc);
}

static inline void kl_copy_s8(int8_t *d, const int8_t *s, int n)
{
	int i = 0;
	for (; i + 4 <= n; i += 4) {
		uint32_t v;
		memcpy(&v, s + i, 4);
		memcpy(d + i, &v, 4);
	}
	for (; i < n; i++) {
		d[i] = s[i];
	}
}

static inline void kl_fill_s8(int8_t *d, int32_t v, int n)
{
	const uint32_t vv = ((uint32_t)v & 0xFFu) * 0x01010101u;
	int i = 0;
	for (; i + 4 <= n; i += 4) {
		memcpy(d + i, &vv, 4);
	}
	for (; i < n; i++) {
		d[i] = (int8_t)v;
	}
}

/* Output column ox: returns the input column of its tap kx = 0 and sets
 * [kx0, kx1), the kernel columns that fall inside the input. */
static inline int kl_im2col_cols(const kl_geom_t *g, int ox, int *kx0, int *kx1)
{
	const int kw = g->kw;
	const int ix0 = ox * g->stride - g->pad_l;
	int a = ix0 < 0 ? -ix0 : 0;
	int b = g->w - ix0 < kw ? g->w - ix0 : kw;
	if (a > kw) {
		a = kw;
	}
	if (b < a) {
		b = a;
	}
	*kx0 = a;
	*kx1 = b;
	return ix0;
}

/* The whole im2col row (kh*kw*c bytes) of output pixel (oy, ox): one copy
 * per kernel row (the taps of a row are contiguous in the input), zp in the
 * padding. */
static inline void kl_im2col_full_s8(const kl_geom_t *g, const int8_t *x, int32_t zp, int oy,
				     int ox, int8_t *out)
{
	const int c = g->c, kw = g->kw;
	int kx0, kx1;
	const int ix0 = kl_im2col_cols(g, ox, &kx0, &kx1);
	for (int ky = 0; ky < g->kh; ky++) {
		const int iy = oy * g->stride + ky - g->pad_t;
		if (iy < 0 || iy >= g->h) {
			kl_fill_s8(out, zp, kw * c);
		} else {
			kl_fill_s8(out, zp, kx0 * c);
			kl_copy_s8(out + kx0 * c, x + ((long)iy * g->w + ix0 + kx0) * c,
				   (kx1 - kx0) * c);
			kl_fill_s8(out + kx1 * c, zp, (kw - kx1) * c);
		}
		out += kw * c;
	}
}

/* Row k0..k1-1 of the im2col matrix of output pixel (oy, ox) as bytes: the
 * input where the tap is inside the image, zp (the real value 0) in the
 * padding and beyond the row's end (k >= kh*kw*c). */
static inline void kl_im2col_s8(const kl_geom_t *g, const int8_t *x, int32_t zp, int oy, int ox,
				int k0, int k1, int8_t *out)
{
	const int c = g->c;
	const int kend = g->kh * g->kw * c;
	int k = k0;
	int t = k / c;
	int ci = k - t * c;
	while (k < k1) {
		if (k >= kend) {
			memset(out, (int)(int8_t)zp, (size_t)(k1 - k));
			return;
		}
		int len = c - ci;
		if (len > k1 - k) {
			len = k1 - k;
		}
		const int ky = t / g->kw, kx = t - ky * g->kw;
		const int iy = oy * g->stride + ky - g->pad_t;
		const int ix = ox * g->stride + kx - g->pad_l;
		if (iy < 0 || iy >= g->h || ix < 0 || ix >= g->w) {
			memset(out, (int)(int8_t)zp, (size_t)len);
		} else {
			memcpy(out, x + ((long)iy * g->w + ix) * c + ci, (size_t)len);
		}
		out += len;
		k += len;
		t++;
		ci = 0;
	}
}

/* Output stage, per call: the bias is shifted once per channel (bq), then
 * every output is qadd, a rounding shift, a clamp. Bit-identical to
 * kl_requant: with y_shift in 1..22, sat32 + the two roundings of
 * kl_requant_shift are one QADD of kl_rq_add() and an arithmetic shift
 * (where the QADD saturates, the true result is far above the int8 range
 * anyway, so the clamp and the saturation flag come out the same); other
 * shifts take kl_requant itself. Saturation is judged once from the
 * extremes of r. */
typedef struct {
	const kl_requant_t *rq;
	int fast, ys;
	int32_t yk, ym, lo, hi, zp, sat_hi, sat_lo;
	int32_t rmax, rmin;
	int sat;
} kl_rqf_t;

static inline void kl_rqf_init(kl_rqf_t *f, const kl_requant_t *rq, const int32_t *b,
			       int32_t *bq, int n)
{
	f->rq = rq;
	f->ys = rq->y_shift;
	f->fast = f->ys >= 1 && f->ys <= 22;
	f->yk = f->fast ? kl_rq_k(f->ys) : 0;
	f->ym = kl_rq_m(f->ys);
	f->lo = rq->lo;
	f->hi = rq->hi;
	f->zp = rq->zp;
	f->sat_hi = rq->cap_saturates ? rq->hi_range : INT32_MAX;
	f->sat_lo = rq->act == KL_ACT_NONE ? rq->lo : INT32_MIN;
	f->rmax = INT32_MIN;
	f->rmin = INT32_MAX;
	f->sat = 0;
	for (int i = 0; i < n; i++) {
		bq[i] = f->fast ? kl_rshift_round(b[i], rq->b_shift) : b[i];
	}
}

/* fast path only: one output from a raw dot product and its shifted bias */
static inline int8_t kl_rqf_one(kl_rqf_t *f, int32_t dot, int32_t bq)
{
	const int32_t acc = __qadd(dot, bq);
	int32_t r = __qadd(acc, kl_rq_add(acc, f->yk, f->ym)) >> f->ys;
	f->rmax = r > f->rmax ? r : f->rmax;
	f->rmin = r < f->rmin ? r : f->rmin;
	r = r > f->hi ? f->hi : r;
	r = r < f->lo ? f->lo : r;
	return (int8_t)(r + f->zp);
}

/* either path; bq is the raw bias on the general path */
static inline int8_t kl_rqf_any(kl_rqf_t *f, int32_t dot, int32_t bq)
{
	if (f->fast) {
		return kl_rqf_one(f, dot, bq);
	}
	return kl_requant(f->rq, dot, bq, &f->sat);
}

static inline int kl_rqf_sat(const kl_rqf_t *f)
{
	return f->sat | (f->rmax >= f->sat_hi) | (f->rmin <= f->sat_lo);
}

#endif
