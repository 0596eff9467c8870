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

#endif
