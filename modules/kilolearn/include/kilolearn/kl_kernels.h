/*
 * kilolearn kernels: one operation per file under src/kernels/<backend>/,
 * named kl_<op>_<type>. The ref backend is the semantics; other backends
 * must agree with it bit for bit (int8) or to rounding (float32).
 *
 * int8 conventions: power-of-two scales, shifts round half away from zero
 * (gemmlowp RoundingDivideByPOT), int32 accumulators. See
 * docs/int8-training.md.
 */
#ifndef KILOLEARN_KL_KERNELS_H
#define KILOLEARN_KL_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KL_LR_FRAC_BITS 12
#define KL_WEYL         0x9E3779B9u

/* Backend selection: the dsp kernels (own ACLE-intrinsic code) where the
 * core has the DSP extension, unless KL_KERNELS_FORCE_REF is defined. The
 * ref kernels are always built: they are the semantics. */
#if defined(__ARM_FEATURE_DSP) && !defined(KL_KERNELS_FORCE_REF)
#define KL_KERNELS_DSP 1
#else
#define KL_KERNELS_DSP 0
#endif

/* ---- quantisation helpers ------------------------------------------------ */
static inline int32_t kl_sat32(int64_t x)
{
	return x > INT32_MAX ? INT32_MAX : (x < INT32_MIN ? INT32_MIN : (int32_t)x);
}

/* x / 2^s rounded half away from zero (gemmlowp RoundingDivideByPOT);
 * s <= 0 shifts left, saturating. */
static inline int32_t kl_rshift_round(int32_t x, int s)
{
	if (s <= 0) {
		return kl_sat32((int64_t)x * ((int64_t)1 << (-s > 32 ? 32 : -s)));
	}
	if (s > 31) {
		return 0;
	}
	const int32_t mask = (int32_t)((1u << s) - 1u);
	const int32_t rem = x & mask;
	const int32_t threshold = (mask >> 1) + (x < 0);
	return (x >> s) + (rem > threshold);
}

/* Requantise an int8 layer output; sets *sat when it clamps (see
 * docs/int8-training.md). */
static inline int8_t kl_requant_out_s8(int32_t dot, int32_t bias, int b_shift, int y_shift,
				       int32_t y_zp, int relu, int *sat)
{
	const int32_t acc = kl_sat32((int64_t)dot + kl_rshift_round(bias, b_shift));
	int32_t r = kl_rshift_round(acc, y_shift);
	const int32_t hi = 127 - y_zp;
	const int32_t lo = relu ? 0 : -128 - y_zp;
	if (r > hi) {
		r = hi;
		*sat = 1;
	} else if (r < lo) {
		*sat |= !relu;
		r = lo;
	}
	return (int8_t)(r + y_zp);
}

/* floor((v + top sh bits of the dither d) / 2^sh), sh limited to [1, 30] */
static inline int32_t kl_stochastic_shift(int32_t v, int sh, uint32_t d)
{
	if (sh > 30) {
		v >>= (sh - 30 > 31 ? 31 : sh - 30);
		sh = 30;
	} else if (sh < 1) {
		sh = 1;
	}
	return (v + (int32_t)(d >> (32 - sh))) >> sh;
}

/* the update of one weight: the step saturated to int8, the result clamped
 * to the symmetric weight range [-127, 127] */
static inline int8_t kl_sub_clamp_w(int8_t w, int32_t delta)
{
	delta = delta > 127 ? 127 : (delta < -128 ? -128 : delta);
	const int32_t r = (int32_t)w - delta;
	return (int8_t)(r > 127 ? 127 : (r < -127 ? -127 : r));
}
/* Smallest s >= 0 bringing max|acc| into int8 range; writes int8 values. */
int kl_quantize_grad_s8(const int32_t *acc, int8_t *out, int n);

/* ---- fully connected, float32 ------------------------------------------- */
void kl_fully_connected_f32(const float *x, const float *w, const float *b, float *y, int n_in,
			    int n_out, int relu);
/* dx = W^T dy */
void kl_fully_connected_backward_input_f32(const float *w, const float *dy, float *dx, int n_in,
					   int n_out);
/* gw = dy x^T, gb = dy */
void kl_fully_connected_grad_f32(const float *dy, const float *x, float *gw, float *gb, int n_in,
				 int n_out);
/* fused SGD (vw == NULL) or SGD with momentum: v = mu v + g; w -= lr v */
void kl_fully_connected_sgd_f32(float *w, float *b, float *vw, float *vb, const float *dy,
				const float *x, float lr, float mu, int n_in, int n_out);
/* p -= lr * (v = mu v + g) over a flat vector (v may be NULL) */
void kl_sgd_f32(float *p, float *v, const float *g, float lr, float mu, int n);

/* ---- fully connected, int8 ---------------------------------------------- */
/* y = act(rshift(W (x - x_zp) + rshift(b, b_shift), y_shift)) + y_zp.
 * Returns 1 if an output saturated, else 0. scratch: KL_FC_S8_SCRATCH(n_in,
 * n_out) bytes, 4-aligned (used by the dsp backend). */
#define KL_FC_S8_SCRATCH(n_in, n_out) (2u * (n_in) + 4u * (n_out) + 8u)
#define KL_FC_S8_ARGS                                                                             \
	const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b, int b_shift,            \
		int y_shift, int32_t y_zp, int relu, int8_t *y, int n_in, int n_out,              \
		int16_t *scratch
int kl_ref_fully_connected_s8(KL_FC_S8_ARGS);
int kl_dsp_fully_connected_s8(KL_FC_S8_ARGS);
/* acc = W^T dy, masked where mask[j] <= mask_zp (mask may be NULL), then
 * quantised to int8 dx; returns the added exponent s. */
int kl_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, const int8_t *mask,
					 int32_t mask_zp, int32_t *acc, int8_t *dx, int n_in,
					 int n_out);
/* gw = dy (x - x_zp)^T as int32 */
void kl_fully_connected_grad_s8(const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t *gw,
				int n_in, int n_out);
/* Fused update: w -= floor((dy_i*lr_q*(x_j - x_zp) + dither) >> w_shift),
 * b -= rshift(dy_i*lr_q, b_shift). scratch as for the forward kernel. */
#define KL_FC_SGD_S8_ARGS                                                                         \
	int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t lr_q,     \
		int w_shift, int b_shift, uint32_t *dither, int n_in, int n_out, int16_t *scratch
void kl_ref_fully_connected_sgd_s8(KL_FC_SGD_S8_ARGS);
void kl_dsp_fully_connected_sgd_s8(KL_FC_SGD_S8_ARGS);
/* The same update from kept gradients (bit-identical to the fused one). */
void kl_sgd_weights_s8(int8_t *w, const int32_t *gw, int32_t lr_q, int w_shift,
		       uint32_t *dither, int n);
void kl_sgd_bias_s8(int32_t *b, const int8_t *gb, int32_t lr_q, int b_shift, int n);

#if KL_KERNELS_DSP
#define kl_fully_connected_s8     kl_dsp_fully_connected_s8
#define kl_fully_connected_sgd_s8 kl_dsp_fully_connected_sgd_s8
#else
#define kl_fully_connected_s8     kl_ref_fully_connected_s8
#define kl_fully_connected_sgd_s8 kl_ref_fully_connected_sgd_s8
#endif

/* ---- softmax cross-entropy ------------------------------------------------ */
/* dy = softmax(z) - onehot(label); returns the loss. */
float kl_softmax_ce_f32(const float *z, int n, int label, float *dy);
/* int8 logits, table T[d] = round(2^15 exp(-d 2^lut_exp)); lut_shift =
 * logits_exp - lut_exp >= 0. dy in Q15 quantised to int8; returns the added
 * exponent s (dy scale 2^(s - 15)). */
int kl_softmax_ce_s8(const int8_t *z, int n, int label, const uint16_t *lut, int lut_shift,
		     int32_t *acc, int8_t *dy);

/* index of the first maximum */
int kl_argmax_f32(const float *v, int n);
int kl_argmax_s8(const int8_t *v, int n);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_KERNELS_H */
