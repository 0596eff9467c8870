/*
 * kilolearn kernels: one operation per file under src/kernels/<backend>/,
 * named kl_<op>_<type>. The ref backend is the semantics; other backends
 * must agree with it bit for bit (int8) or to rounding (float32).
 *
 * Tensors are HWC. Weights: dense [out][in], conv [out][kh][kw][in],
 * depthwise [kh][kw][c]. int8 conventions: power-of-two scales, shifts round
 * half away from zero (gemmlowp RoundingDivideByPOT), int32 accumulators.
 * See docs/int8-training.md.
 */
#ifndef KILOLEARN_KL_KERNELS_H
#define KILOLEARN_KL_KERNELS_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Backend selection: the dsp kernels (own ACLE-intrinsic code) where the
 * core has the DSP extension, unless KL_KERNELS_FORCE_REF is defined. The
 * ref kernels are always built: they are the semantics. */
#if defined(__ARM_FEATURE_DSP) && !defined(KL_KERNELS_FORCE_REF)
#define KL_KERNELS_DSP 1
#else
#define KL_KERNELS_DSP 0
#endif

/* The fpu kernels (src/kernels/fpu/: float32 dense layers on VLDM/VSTM and
 * VFMA) where the core has a single-precision FPU and Thumb-2. */
#if defined(__ARM_FP) && (__ARM_FP & 4) && defined(__thumb2__) && !defined(KL_KERNELS_FORCE_REF)
#define KL_KERNELS_FPU 1
#else
#define KL_KERNELS_FPU 0
#endif

/* The mve kernels (src/kernels/mve/: Armv8.1-M MVE "Helium" integer, as on
 * Cortex-M55 and M85) where the core has it: they take over from the dsp
 * ones (such a core has the DSP extension too) for the ops they cover, see
 * the selections below. KL_KERNELS_NO_MVE keeps the dsp ones. */
#if defined(__ARM_FEATURE_MVE) && (__ARM_FEATURE_MVE & 1) && !defined(KL_KERNELS_FORCE_REF) &&   \
	!defined(KL_KERNELS_NO_MVE)
#define KL_KERNELS_MVE 1
#else
#define KL_KERNELS_MVE 0
#endif

#define KL_LR_FRAC_BITS 12
#define KL_WEYL         0x9E3779B9u
#define KL_WEYL_INV     0x144CBC89u /* KL_WEYL^-1 mod 2^32: j from j KL_WEYL */

enum kl_act_kind {
	KL_ACT_NONE = 0,
	KL_ACT_RELU = 1,
	KL_ACT_RELU6 = 2,
	/* blob 2.6; not fused into the kernels: applied to their output
	 * (kl_activation_*), dense, conv and depthwise only */
	KL_ACT_SIGMOID = 3,
	KL_ACT_TANH = 4,
	KL_ACT_LEAKY_RELU = 5
};
#define KL_LEAKY_SHIFT 3      /* leaky ReLU: alpha = 2^-3 on negative inputs */
#define KL_LEAKY_ALPHA 0.125f
/* int8: sigmoid and tanh read a pre-activation of this fixed exponent (zero
 * point 0) and write outputs of a fixed scale (docs/int8-training.md) */
#define KL_SIGMOID_PRE_EXP (-4)
#define KL_SIGMOID_EXP     (-8)
#define KL_SIGMOID_ZP      (-128)
#define KL_TANH_PRE_EXP    (-5)
#define KL_TANH_EXP        (-7)

/* the activation a kernel fuses (ReLU, ReLU6); the others come after it */
static inline int kl_kernel_act(int act)
{
	return act <= KL_ACT_RELU6 ? act : KL_ACT_NONE;
}

/* bits of the int8 derivative rule of kl_activation_grad_s8 */
static inline int kl_act_deriv_bits(int act)
{
	return act == KL_ACT_SIGMOID ? 16 : act == KL_ACT_TANH ? 14 : KL_LEAKY_SHIFT;
}

/* sigmoid, tanh or leaky ReLU in place (float32; int8: y holds the
 * pre-activation, sigmoid and tanh by table, leaky ReLU around zp) */
void kl_activation_f32(float *y, int n, int act);
void kl_activation_s8(int8_t *y, int n, int act, int32_t zp);
/* dy times the activation's derivative at the outputs y: float32 in place;
 * int8 requantised in place, returns the change of dy's exponent */
void kl_activation_grad_f32(const float *y, int act, float *dy, int n);
int kl_activation_grad_s8(const int8_t *y, int32_t zp, int act, int8_t *dy, int n);

/* float32 activation of an output (ReLU, ReLU6 or none) */
static inline float kl_act_f32(float v, int act)
{
	if (act != KL_ACT_NONE && v < 0.0f) {
		return 0.0f;
	}
	return (act == KL_ACT_RELU6 && v > 6.0f) ? 6.0f : v;
}

/* ---- quantisation helpers ------------------------------------------------ */
static inline int32_t kl_sat32(int64_t x)
{
	return x > INT32_MAX ? INT32_MAX : (x < INT32_MIN ? INT32_MIN : (int32_t)x);
}

/* x / 2^s rounded half away from zero (gemmlowp RoundingDivideByPOT);
 * s <= 0 shifts left, saturating to int32. */
static inline int64_t kl_rshift_round64(int64_t x, int s)
{
	if (s <= 0) {
		const int l = -s > 32 ? 32 : -s;
		if (x > ((int64_t)INT32_MAX >> l)) {
			return INT32_MAX;
		}
		if (x < ((int64_t)INT32_MIN >> l)) {
			return INT32_MIN;
		}
		return x * ((int64_t)1 << l);
	}
	if (s > 62) {
		return 0;
	}
	const int64_t mask = (int64_t)(((uint64_t)1 << s) - 1u);
	const int64_t rem = x & mask;
	const int64_t threshold = (mask >> 1) + (x < 0);
	return (x >> s) + (rem > threshold);
}

static inline int32_t kl_rshift_round(int32_t x, int s)
{
	if (s <= 0) {
		return (int32_t)kl_rshift_round64(x, s);
	}
	if (s > 31) {
		return 0;
	}
	const int32_t mask = (int32_t)((1u << s) - 1u);
	const int32_t rem = x & mask;
	const int32_t threshold = (mask >> 1) + (x < 0);
	return (x >> s) + (rem > threshold);
}

/* Output stage of an int8 op (dense, conv, depthwise, add). */
typedef struct {
	int b_shift, y_shift;
	int32_t zp, lo, hi, hi_range;
	uint8_t act;
	uint8_t cap_saturates; /* relu6: 6.0 does not fit, the range clamps */
} kl_requant_t;

/* x_exp + w_exp is the accumulator exponent (for add: the aligned inputs'). */
static inline void kl_requant_init(kl_requant_t *q, int acc_exp, int b_exp, int y_exp,
				   int32_t y_zp, int act)
{
	q->b_shift = acc_exp - b_exp;
	q->y_shift = y_exp - acc_exp;
	q->zp = y_zp;
	q->act = (uint8_t)act;
	q->hi_range = 127 - y_zp;
	q->lo = act != KL_ACT_NONE ? 0 : -128 - y_zp;
	q->hi = q->hi_range;
	q->cap_saturates = 1;
	if (act == KL_ACT_RELU6) {
		const int32_t q6 = kl_rshift_round(6, y_exp);
		q->cap_saturates = q6 > q->hi_range;
		q->hi = q6 < q->hi_range ? q6 : q->hi_range;
	}
}

/* x / 2^s as TFLite and CMSIS-NN requantise with a power-of-two scale,
 * MultiplyByQuantizedMultiplier(x, 1 << 30, 1 - s): x / 2 rounded half up
 * (SaturatingRoundingDoublingHighMul), then RoundingDivideByPOT by s - 1.
 * s <= 0 shifts left exactly, saturating. docs/int8-training.md */
static inline int32_t kl_requant_shift(int32_t x, int s)
{
	if (s <= 0) {
		return kl_rshift_round(x, s);
	}
	const int32_t h = (x >> 1) + (x & 1);
	return kl_rshift_round(h, s - 1);
}

/* TFLite's QuantizeMultiplier(1.0 / n) in integers, n >= 1:
 * 1/n = q * 2^(e - 31), q in [2^30, 2^31) */
static inline void kl_recip_q31(int32_t n, int32_t *q, int *e)
{
	int k = 0;
	while (((int64_t)1 << k) < n) {
		k++;
	}
	*e = 1 - k;
	if (((int64_t)1 << k) == n) {
		*q = (int32_t)1 << 30;
	} else { /* 2^(k-1) < n < 2^k: q = round(2^(k+30) / n), by shift and
		  * subtract (no 64-bit division helper from libgcc) */
		uint64_t num = ((uint64_t)1 << (k + 31)) + (uint64_t)n;
		const uint64_t den = 2u * (uint64_t)n;
		uint32_t r = 0;
		for (int b = 31; b >= 0; b--) {
			if ((den << b) <= num) {
				num -= den << b;
				r |= 1u << b;
			}
		}
		*q = (int32_t)r;
	}
}

/* TFLite's MultiplyByQuantizedMultiplier(x, q, e) for e <= 1: x * q / 2^31
 * rounded half up, then divided by 2^-e rounded half away from zero */
static inline int32_t kl_mul_q31(int32_t x, int32_t q, int e)
{
	const int64_t p = ((int64_t)x * (e > 0 ? 2 : 1)) * q;
	return kl_rshift_round((int32_t)((p + ((int64_t)1 << 30)) >> 31), e > 0 ? 0 : -e);
}

/* clamp an output r (units of the output scale, before the zero point).
 * The layer saturated when an output reached the end of the int8 range that
 * is not an activation's bound: the top (unless ReLU6's cap is lower), and
 * the bottom without an activation. That is visible in the outputs alone,
 * so every backend (CMSIS-NN included) reports the same flag. */
static inline int8_t kl_requant_clamp(const kl_requant_t *q, int32_t r, int *sat)
{
	if (r >= q->hi_range && q->cap_saturates) {
		*sat = 1;
	} else if (r <= q->lo && q->act == KL_ACT_NONE) {
		*sat = 1;
	}
	const int32_t c = r > q->hi ? q->hi : (r < q->lo ? q->lo : r);
	return (int8_t)(c + q->zp);
}

static inline int8_t kl_requant(const kl_requant_t *q, int32_t dot, int32_t bias, int *sat)
{
	const int32_t acc = kl_sat32((int64_t)dot + kl_rshift_round(bias, q->b_shift));
	return kl_requant_clamp(q, kl_requant_shift(acc, q->y_shift), sat);
}

/* does int8 output y (zero point zp, exponent exp) pass gradient? */
static inline int kl_act_pass_s8(int8_t y, int32_t zp, int act, int32_t q6)
{
	if (act == KL_ACT_RELU) {
		return y > zp;
	}
	if (act == KL_ACT_RELU6) {
		return y > zp && (int32_t)y - zp < q6;
	}
	return 1;
}

/* floor((v + top sh bits of the dither d) / 2^sh), sh limited to [1, 30] */
static inline int64_t kl_stochastic_shift(int64_t v, int sh, uint32_t d)
{
	if (sh > 30) {
		v >>= (sh - 30 > 62 ? 62 : sh - 30);
		sh = 30;
	} else if (sh < 1) {
		sh = 1;
	}
	return (v + (int64_t)(d >> (32 - sh))) >> sh;
}

/* the update of one weight: the step saturated to int8, the result clamped
 * to the symmetric weight range [-127, 127] */
static inline int8_t kl_sub_clamp_w(int8_t w, int64_t delta)
{
	delta = delta > 127 ? 127 : (delta < -128 ? -128 : delta);
	const int32_t r = (int32_t)w - (int32_t)delta;
	return (int8_t)(r > 127 ? 127 : (r < -127 ? -127 : r));
}

/* Smallest s >= 0 bringing max|acc| into int8 range; writes int8 values.
 * out may overlap acc when it starts at acc or ends at or before the end of
 * acc's n int32 (a gradient quantised in place in its accumulators). */
int kl_quantize_grad_s8(const int32_t *acc, int8_t *out, int n);
/* that shift for the largest magnitude m: the smallest s with
 * round(m / 2^s) <= 127 */
int kl_grad_shift(uint32_t m);
/* The same, in place (values stay int32). */
int kl_quantize_grad_s32(int32_t *acc, int n);

/* index of the first maximum among the classes with mask[i] != 0 (mask
 * NULL: all) */
int kl_argmax_f32(const float *v, int n, const uint8_t *mask);
int kl_argmax_s8(const int8_t *v, int n, const uint8_t *mask);

/* ---- geometry of conv / depthwise / pooling ------------------------------ */
typedef struct {
	int h, w, c;    /* input */
	int ho, wo, co; /* output */
	int kh, kw, stride;
	int pad_t, pad_l;
} kl_geom_t;

/* ---- fully connected ------------------------------------------------------ */
void kl_ref_fully_connected_f32(const float *x, const float *w, const float *b, float *y,
				int n_in, int n_out, int act);
void kl_fpu_fully_connected_f32(const float *x, const float *w, const float *b, float *y,
				int n_in, int n_out, int act);
/* dx = W^T dy */
void kl_ref_fully_connected_backward_input_f32(const float *w, const float *dy, float *dx,
					       int n_in, int n_out);
void kl_fpu_fully_connected_backward_input_f32(const float *w, const float *dy, float *dx,
					       int n_in, int n_out);
/* gw = dy x^T, gb = dy */
void kl_fully_connected_grad_f32(const float *dy, const float *x, float *gw, float *gb, int n_in,
				 int n_out);
/* fused SGD (vw == NULL) or SGD with momentum: v = mu v + g; w -= lr v */
void kl_ref_fully_connected_sgd_f32(float *w, float *b, float *vw, float *vb, const float *dy,
				    const float *x, float lr, float mu, int n_in, int n_out);
void kl_fpu_fully_connected_sgd_f32(float *w, float *b, float *vw, float *vb, const float *dy,
				    const float *x, float lr, float mu, int n_in, int n_out);
#if KL_KERNELS_FPU
#define kl_fully_connected_f32                kl_fpu_fully_connected_f32
#define kl_fully_connected_backward_input_f32 kl_fpu_fully_connected_backward_input_f32
#define kl_fully_connected_sgd_f32            kl_fpu_fully_connected_sgd_f32
#else
#define kl_fully_connected_f32                kl_ref_fully_connected_f32
#define kl_fully_connected_backward_input_f32 kl_ref_fully_connected_backward_input_f32
#define kl_fully_connected_sgd_f32            kl_ref_fully_connected_sgd_f32
#endif
/* p -= lr * (v = mu v + g) over a flat vector (v may be NULL) */
void kl_sgd_f32(float *p, float *v, const float *g, float lr, float mu, int n);

/* y = requant(W (x - x_zp), b). Returns 1 if an output saturated, else 0.
 * scratch: KL_FC_S8_SCRATCH(n_in, n_out) bytes, 4-aligned. */
#define KL_FC_S8_SCRATCH(n_in, n_out) (2u * (n_in) + 4u * (n_out) + 8u)
#define KL_FC_S8_ARGS                                                                             \
	const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,                         \
		const kl_requant_t *rq, int8_t *y, int n_in, int n_out, int16_t *scratch
int kl_ref_fully_connected_s8(KL_FC_S8_ARGS);
int kl_dsp_fully_connected_s8(KL_FC_S8_ARGS);
/* The same for n_out <= KL_FC_ROWS_MAX rows given one by one (rows[i]: n_in
 * int8, wherever it lies; b[i] its bias): the rows of a paged op, from the
 * blob or the weight log. scratch: KL_FC_S8_SCRATCH(n_in, n_out). */
#define KL_FC_ROWS_MAX 16
#define KL_FC_ROWS_S8_ARGS                                                                        \
	const int8_t *x, int32_t x_zp, const int8_t *const *rows, const int32_t *b,               \
		const kl_requant_t *rq, int8_t *y, int n_in, int n_out, int16_t *scratch
int kl_ref_fully_connected_rows_s8(KL_FC_ROWS_S8_ARGS);
int kl_dsp_fully_connected_rows_s8(KL_FC_ROWS_S8_ARGS);
/* acc = W^T dy (int32) */
void kl_ref_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, int32_t *acc,
					      int n_in, int n_out);
void kl_dsp_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, int32_t *acc,
					      int n_in, int n_out);
/* gw = dy (x - x_zp)^T as int32, gb = dy */
void kl_ref_fully_connected_grad_s8(const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t *gw,
				    int32_t *gb, int n_in, int n_out);
/* Fused update: w -= floor((dy_i*lr_q*(x_j - x_zp) + dither) >> w_shift),
 * b -= rshift(dy_i*lr_q, b_shift). scratch: KL_FC_SGD_S8_SCRATCH(n_in,
 * n_out) bytes, 4-aligned: the forward kernel's, or room for KL_FC_SGD_LIST
 * (or all n_in) of the 12-byte entries the dsp backend's paired kernel lists
 * the non-zero inputs in (more are walked in parts), and 48 bytes. */
#define KL_FC_SGD_LIST 40u
#define KL_FC_SGD_S8_LIST_BYTES(n_in)                                                             \
	(12u * ((uint32_t)(n_in) < KL_FC_SGD_LIST ? (uint32_t)(n_in) : KL_FC_SGD_LIST) + 48u)
#define KL_FC_SGD_S8_SCRATCH(n_in, n_out)                                                         \
	(KL_FC_S8_SCRATCH(n_in, n_out) > KL_FC_SGD_S8_LIST_BYTES(n_in)                             \
		 ? KL_FC_S8_SCRATCH(n_in, n_out)                                                  \
		 : KL_FC_SGD_S8_LIST_BYTES(n_in))
/* the widest layer the list takes (a column's offset in a pair below 2^16);
 * wider ones step weight by weight */
#define KL_FC_SGD_LIST_MAX 32764
#define KL_FC_SGD_S8_ARGS                                                                         \
	int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t lr_q,     \
		int w_shift, int b_shift, uint32_t *dither, int n_in, int n_out, int16_t *scratch
void kl_ref_fully_connected_sgd_s8(KL_FC_SGD_S8_ARGS);
void kl_dsp_fully_connected_sgd_s8(KL_FC_SGD_S8_ARGS);

/* The paired dense layout (dsp backend, docs/kernels.md): rows 2p and 2p + 1
 * in one block of 2 n_in bytes; per group of four inputs j..j+3 two words,
 * columns (j, j + 2) then (j + 1, j + 3), each halfword = (w[2p][c] ^ 0x80) |
 * w[2p + 1][c] << 8. Where kl_fc_triples(n_in), three pairs 3t..3t+2 share
 * one block of 6 n_in bytes, their 8-byte groups interleaved (group g of
 * pair 3t + q at 24 g + 8 q), so that one pointer walks them; the pairs
 * after the last full three stay as above. An odd last row stays plain,
 * after the pairs. Needs n_in % 4 == 0. The engine keeps a trained dense layer so where
 * KL_FC_PAIRED (kl_model_init), and the forward, input-gradient and fused SGD
 * kernels below read and update it in place, bit-identical to the ref
 * kernels on the plain layout. */
#define KL_FC_PAIRED (KL_KERNELS_DSP && !KL_KERNELS_MVE) /* MVE: its own kernels, plain layout */
static inline int kl_fc_triples(int n_in)
{
	return (n_in & 7) == 0 && n_in <= 256;
}
/* byte offset of pair p's first word; *gs: its bytes from one group of four
 * inputs to the next (8, or 24 in a block of three) */
static inline long kl_fc_pair_at(int p, int n_in, int n_out, int *gs)
{
	const int nt = kl_fc_triples(n_in) ? (n_out >> 1) / 3 : 0;
	if (p < 3 * nt) {
		*gs = 24;
		return (long)(p / 3) * 6 * n_in + 8 * (p % 3);
	}
	*gs = 8;
	return (long)p * 2 * n_in;
}
uint32_t kl_fc_paired_offset(uint32_t i, uint32_t j, uint32_t n_in, uint32_t n_out);
int8_t kl_fc_paired_get(const int8_t *p, uint32_t i, uint32_t j, uint32_t n_in, uint32_t n_out);
void kl_fc_pair_s8(const int8_t *w, int8_t *out, int n_in, int n_out);
void kl_fc_unpair_s8(const int8_t *p, int8_t *out, int n_in, int n_out);
int kl_dsp_fully_connected_paired_s8(KL_FC_S8_ARGS);
void kl_dsp_fully_connected_backward_input_paired_s8(const int8_t *w, const int8_t *dy,
						     int32_t *acc, int n_in, int n_out);
void kl_dsp_fully_connected_sgd_paired_s8(KL_FC_SGD_S8_ARGS);

/* The update from kept gradients (bit-identical to the fused one). */
void kl_ref_sgd_weights_s8(int8_t *w, const int32_t *gw, int32_t lr_q, int w_shift,
			   uint32_t *dither, int n);
void kl_dsp_sgd_weights_s8(int8_t *w, const int32_t *gw, int32_t lr_q, int w_shift,
			   uint32_t *dither, int n);
void kl_sgd_bias_s8(int32_t *b, const int32_t *gb, int32_t lr_q, int b_shift, int n);

#if KL_KERNELS_DSP
#define kl_fully_connected_rows_s8           kl_dsp_fully_connected_rows_s8
#define kl_fully_connected_s8                kl_dsp_fully_connected_s8
#define kl_fully_connected_sgd_s8            kl_dsp_fully_connected_sgd_s8
#define kl_fully_connected_backward_input_s8 kl_dsp_fully_connected_backward_input_s8
#define kl_sgd_weights_s8                    kl_dsp_sgd_weights_s8
#else
#define kl_fully_connected_rows_s8           kl_ref_fully_connected_rows_s8
#define kl_fully_connected_s8                kl_ref_fully_connected_s8
#define kl_fully_connected_sgd_s8            kl_ref_fully_connected_sgd_s8
#define kl_fully_connected_backward_input_s8 kl_ref_fully_connected_backward_input_s8
#define kl_sgd_weights_s8                    kl_ref_sgd_weights_s8
#endif

/* The mve dense kernels (src/kernels/mve/), over the plain [out][in] layout. */
int kl_mve_fully_connected_s8(KL_FC_S8_ARGS);
int kl_mve_fully_connected_rows_s8(KL_FC_ROWS_S8_ARGS);
void kl_mve_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, int32_t *acc,
					      int n_in, int n_out);
void kl_mve_fully_connected_grad_s8(const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t *gw,
				    int32_t *gb, int n_in, int n_out);
void kl_mve_fully_connected_sgd_s8(KL_FC_SGD_S8_ARGS);
#if KL_KERNELS_MVE
#undef kl_fully_connected_sgd_s8
#define kl_fully_connected_sgd_s8 kl_mve_fully_connected_sgd_s8
#undef kl_fully_connected_rows_s8
#undef kl_fully_connected_s8
#undef kl_fully_connected_backward_input_s8
#define kl_fully_connected_rows_s8           kl_mve_fully_connected_rows_s8
#define kl_fully_connected_s8                kl_mve_fully_connected_s8
#define kl_fully_connected_backward_input_s8 kl_mve_fully_connected_backward_input_s8
#define kl_fully_connected_grad_s8           kl_mve_fully_connected_grad_s8
#else
#define kl_fully_connected_grad_s8 kl_ref_fully_connected_grad_s8
#endif

/* ---- convolution (groups = 1) and depthwise convolution (multiplier 1) ---
 * int8 kernels take a kernel scratch area of KL_CONV_S8_SCRATCH(g) bytes
 * (4-aligned; the dsp backend's im2col / transpose / packing buffers, laid
 * out by src/kernels/dsp/kl_dsp_conv.h). The size is the largest need of the
 * six int8 conv/depthwise kernels for that geometry (one formula serves both
 * op kinds); every part is bounded by the layer's size or a fixed tile. */
#define KL_DSP_WT_TILE_BYTES 8192u /* transposed-weight tile, input gradient */
#define KL_DSP_GRAD_KTILE    256u  /* im2col columns per tile, weight gradient */
#define KL_DSP_GRAD_PAIRS    4u    /* pixel pairs per chunk, weight gradient */
/* input gradient: bytes of the W^T tile and its rows (im2col columns) */
static inline uint32_t kl_conv_s8_wt_bytes(const kl_geom_t *g)
{
	const uint32_t k4 = ((uint32_t)g->kh * (uint32_t)g->kw * (uint32_t)g->c + 3u) & ~3u;
	const uint32_t cmax = (uint32_t)(g->co > g->c ? g->co : g->c);
	const uint32_t c4 = (cmax + 3u) & ~3u;
	const uint32_t wt = k4 * c4;
	const uint32_t wt_max = KL_DSP_WT_TILE_BYTES > 4u * c4 ? KL_DSP_WT_TILE_BYTES : 4u * c4;
	return wt < wt_max ? wt : wt_max;
}
static inline uint32_t kl_conv_s8_wt_rows(const kl_geom_t *g)
{
	const uint32_t k4 = ((uint32_t)g->kh * (uint32_t)g->kw * (uint32_t)g->c + 3u) & ~3u;
	const uint32_t cmax = (uint32_t)(g->co > g->c ? g->co : g->c);
	const uint32_t c4 = (cmax + 3u) & ~3u;
	const uint32_t t = (kl_conv_s8_wt_bytes(g) / c4) & ~3u;
	return t < k4 ? t : k4;
}
static inline uint32_t kl_conv_s8_scratch(const kl_geom_t *g)
{
	const uint32_t taps = (uint32_t)g->kh * (uint32_t)g->kw;
	const uint32_t k4 = (taps * (uint32_t)g->c + 3u) & ~3u;
	const uint32_t cmax = (uint32_t)(g->co > g->c ? g->co : g->c);
	const uint32_t c4 = (cmax + 3u) & ~3u;
	/* forward: two int16 columns, two byte columns, two rows of dots */
	uint32_t need = 6u * k4 + 8u * c4;
	/* input gradient: W^T tile, two centred dy pixels, two int32 columns */
	const uint32_t bwd = kl_conv_s8_wt_bytes(g) + 4u * c4 + 8u * kl_conv_s8_wt_rows(g);
	need = need > bwd ? need : bwd;
	/* weight gradient: packed im2col tile, packed dy, two byte columns */
	const uint32_t kt = k4 < KL_DSP_GRAD_KTILE ? k4 : KL_DSP_GRAD_KTILE;
	const uint32_t grad = 4u * KL_DSP_GRAD_PAIRS * (kt + c4) + 2u * kt;
	need = need > grad ? need : grad;
	/* depthwise: widened weights, correction, dots, a zero-point row, taps */
	const uint32_t dw = 2u * taps * c4 + 9u * c4 + 8u * taps;
	need = need > dw ? need : dw;
	return need + 16u;
}
#ifndef KL_CONV_S8_SCRATCH
#define KL_CONV_S8_SCRATCH(g) kl_conv_s8_scratch(g)
#endif
void kl_conv_f32(const kl_geom_t *g, const float *x, const float *w, const float *b, float *y,
		 int act);
/* dx = conv^T(dy), dx has the input's shape (overwritten) */
void kl_conv_backward_input_f32(const kl_geom_t *g, const float *w, const float *dy, float *dx);
/* gw, gb (overwritten) */
void kl_conv_grad_f32(const kl_geom_t *g, const float *x, const float *dy, float *gw, float *gb);
void kl_depthwise_conv_f32(const kl_geom_t *g, const float *x, const float *w, const float *b,
			   float *y, int act);
void kl_depthwise_conv_backward_input_f32(const kl_geom_t *g, const float *w, const float *dy,
					  float *dx);
void kl_depthwise_conv_grad_f32(const kl_geom_t *g, const float *x, const float *dy, float *gw,
				float *gb);

#define KL_CONV_S8_ARGS                                                                           \
	const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,     \
		const kl_requant_t *rq, int8_t *y, void *scratch
/* acc (input shape, int32) = conv^T(dy) */
#define KL_CONV_BWD_S8_ARGS                                                                       \
	const kl_geom_t *g, const int8_t *w, const int8_t *dy, int32_t *acc, void *scratch
/* gw, gb (int32, overwritten) */
#define KL_CONV_GRAD_S8_ARGS                                                                      \
	const kl_geom_t *g, const int8_t *x, int32_t x_zp, const int8_t *dy, int32_t *gw,         \
		int32_t *gb, void *scratch
int kl_ref_conv_s8(KL_CONV_S8_ARGS);
void kl_ref_conv_backward_input_s8(KL_CONV_BWD_S8_ARGS);
void kl_ref_conv_grad_s8(KL_CONV_GRAD_S8_ARGS);
int kl_ref_depthwise_conv_s8(KL_CONV_S8_ARGS);
void kl_ref_depthwise_conv_backward_input_s8(KL_CONV_BWD_S8_ARGS);
void kl_ref_depthwise_conv_grad_s8(KL_CONV_GRAD_S8_ARGS);

/* Which backend serves each int8 conv kernel: the dsp variants (own
 * ACLE-intrinsic code in src/kernels/dsp/) where the core has the DSP
 * extension, the ref ones elsewhere (M3, host). */
int kl_dsp_conv_s8(KL_CONV_S8_ARGS);
void kl_dsp_conv_backward_input_s8(KL_CONV_BWD_S8_ARGS);
void kl_dsp_conv_grad_s8(KL_CONV_GRAD_S8_ARGS);
int kl_dsp_depthwise_conv_s8(KL_CONV_S8_ARGS);
void kl_dsp_depthwise_conv_backward_input_s8(KL_CONV_BWD_S8_ARGS);
void kl_dsp_depthwise_conv_grad_s8(KL_CONV_GRAD_S8_ARGS);
#if KL_KERNELS_DSP
#define kl_conv_s8                          kl_dsp_conv_s8
#define kl_conv_backward_input_s8           kl_dsp_conv_backward_input_s8
#define kl_conv_grad_s8                     kl_dsp_conv_grad_s8
#define kl_depthwise_conv_s8                kl_dsp_depthwise_conv_s8
#define kl_depthwise_conv_backward_input_s8 kl_dsp_depthwise_conv_backward_input_s8
#define kl_depthwise_conv_grad_s8           kl_dsp_depthwise_conv_grad_s8
#else
#define kl_conv_s8                          kl_ref_conv_s8
#define kl_conv_backward_input_s8           kl_ref_conv_backward_input_s8
#define kl_conv_grad_s8                     kl_ref_conv_grad_s8
#define kl_depthwise_conv_s8                kl_ref_depthwise_conv_s8
#define kl_depthwise_conv_backward_input_s8 kl_ref_depthwise_conv_backward_input_s8
#define kl_depthwise_conv_grad_s8           kl_ref_depthwise_conv_grad_s8
#endif
/* the mve depthwise kernels (src/kernels/mve/), within kl_conv_s8_scratch() */
int kl_mve_depthwise_conv_s8(KL_CONV_S8_ARGS);
void kl_mve_depthwise_conv_backward_input_s8(KL_CONV_BWD_S8_ARGS);
void kl_mve_depthwise_conv_grad_s8(KL_CONV_GRAD_S8_ARGS);
#if KL_KERNELS_MVE
#undef kl_depthwise_conv_s8
#undef kl_depthwise_conv_backward_input_s8
#undef kl_depthwise_conv_grad_s8
#define kl_depthwise_conv_s8                kl_mve_depthwise_conv_s8
#define kl_depthwise_conv_backward_input_s8 kl_mve_depthwise_conv_backward_input_s8
#define kl_depthwise_conv_grad_s8           kl_mve_depthwise_conv_grad_s8
#endif

/* The CMSIS-NN backend (src/kernels/cmsis_nn/, only with CMSIS-NN present):
 * the forward int8 dense, conv and depthwise kernels through CMSIS-NN, the
 * backward ones as above. The engine calls the *_prep_s8 kernels on a
 * parameter block per op (docs/kernels.md, cmsis_nn); their scratch is
 * CMSIS-NN's own buffer, within the default need. */
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
int kl_cmsis_fully_connected_s8(KL_FC_S8_ARGS);
int kl_cmsis_conv_s8(KL_CONV_S8_ARGS);
int kl_cmsis_depthwise_conv_s8(KL_CONV_S8_ARGS);
uint32_t kl_cmsis_conv_s8_buffer(const kl_geom_t *g);
uint32_t kl_cmsis_depthwise_conv_s8_buffer(const kl_geom_t *g);
/* A layer's parameters kept between calls (the engine: one block per int8
 * dense, conv and depthwise op in the arena, kl_model_init), so that a call
 * is CMSIS-NN's alone: int32 words, [0] the b_shift and [1] the y_shift they
 * are for (INT32_MIN: none yet), [2] CMSIS-NN's buffer bytes, then n biases
 * at the accumulator's scale, and for conv and depthwise (per_channel) n
 * multipliers and n shifts. n: output channels. kl_cmsis_prep_init sets the
 * header (kind KL_CMSIS_*; g: conv and depthwise only). */
#define KL_CMSIS_PREP_HEADER 3
#define KL_CMSIS_PREP_KEY_B  0
#define KL_CMSIS_PREP_KEY_Y  1
#define KL_CMSIS_PREP_BUF    2
#define KL_CMSIS_PREP_BYTES(n, per_channel)                                                       \
	(4u * KL_CMSIS_PREP_HEADER + ((per_channel) ? 12u : 4u) * (uint32_t)(n))
enum { KL_CMSIS_FC = 0, KL_CMSIS_CONV = 1, KL_CMSIS_DW = 2 };
void kl_cmsis_prep_init(int32_t *prep, int kind, const kl_geom_t *g);
/* The kernels on such a block; bias_changed: b may differ from the last
 * call's (a trained layer). The conv and depthwise scratch: CMSIS-NN's buffer
 * (or the default kernels' where CMSIS-NN cannot take the shift). */
int kl_cmsis_fully_connected_prep_s8(KL_FC_S8_ARGS, int32_t *prep, int bias_changed);
int kl_cmsis_conv_prep_s8(KL_CONV_S8_ARGS, int32_t *prep, int bias_changed);
int kl_cmsis_depthwise_conv_prep_s8(KL_CONV_S8_ARGS, int32_t *prep, int bias_changed);
/* The kernels without such a block keep one at the start of their scratch. */
static inline uint32_t kl_cmsis_conv_s8_scratch(const kl_geom_t *g)
{
	const uint32_t a = kl_cmsis_conv_s8_buffer(g), b = kl_cmsis_depthwise_conv_s8_buffer(g);
	const uint32_t c = (uint32_t)(g->co > g->c ? g->co : g->c);
	const uint32_t need = KL_CMSIS_PREP_BYTES(c, 1) + (a > b ? a : b) + 16u;
	const uint32_t dflt = kl_conv_s8_scratch(g);
	return need > dflt ? need : dflt;
}
/* ... the prep kernels need CMSIS-NN's buffer alone, within the default
 * need on cores without MVE: 4 k4 bytes (conv), 2 taps c (depthwise) */
static inline uint32_t kl_cmsis_conv_prep_s8_scratch(const kl_geom_t *g)
{
	const uint32_t a = kl_cmsis_conv_s8_buffer(g), b = kl_cmsis_depthwise_conv_s8_buffer(g);
	const uint32_t need = (a > b ? a : b) + 16u;
	const uint32_t dflt = kl_conv_s8_scratch(g);
	return need > dflt ? need : dflt;
}
#undef KL_CONV_S8_SCRATCH
#define KL_CONV_S8_SCRATCH(g) kl_cmsis_conv_s8_scratch(g)
#undef kl_fully_connected_s8
#undef kl_conv_s8
#undef kl_depthwise_conv_s8
#define kl_fully_connected_s8 kl_cmsis_fully_connected_s8
#define kl_conv_s8            kl_cmsis_conv_s8
#define kl_depthwise_conv_s8  kl_cmsis_depthwise_conv_s8
#endif

/* ---- pooling (valid windows) ------------------------------------------------ */
void kl_avgpool_f32(const kl_geom_t *g, const float *x, float *y);
void kl_avgpool_backward_f32(const kl_geom_t *g, const float *dy, float *dx);
void kl_maxpool_f32(const kl_geom_t *g, const float *x, float *y);
void kl_maxpool_backward_f32(const kl_geom_t *g, const float *x, const float *dy, float *dx);
void kl_avgpool_s8(const kl_geom_t *g, const int8_t *x, int32_t zp, int8_t *y);
/* acc = dy * round(2^16 / window) spread over each window (exponent - 16) */
void kl_avgpool_backward_s8(const kl_geom_t *g, const int8_t *dy, int32_t *acc);
void kl_maxpool_s8(const kl_geom_t *g, const int8_t *x, int8_t *y);
void kl_maxpool_backward_s8(const kl_geom_t *g, const int8_t *x, const int8_t *dy,
			    int32_t *acc);

/* ---- residual add ------------------------------------------------------------ */
void kl_add_f32(const float *a, const float *b, float *y, int n, int act);
/* y = requant((a - za) << sa + (b - zb) << sb) */
int kl_add_s8(const int8_t *a, int32_t za, int sa, const int8_t *b, int32_t zb, int sb,
	      const kl_requant_t *rq, int8_t *y, int n);

/* ---- softmax cross-entropy ------------------------------------------------ */
/* dy = softmax(z) - onehot(label) over the active classes (mask[i] != 0, or
 * all when mask is NULL; the label always counts); inactive classes get no
 * probability and no gradient. Returns the loss. */
float kl_ref_softmax_ce_f32(const float *z, int n, int label, const uint8_t *mask, float *dy);
/* the same gradient without the loss (no logf): what a training step needs */
void kl_ref_softmax_ce_grad_f32(const float *z, int n, int label, const uint8_t *mask, float *dy);
/* the fpu backend's: exp inlined, within about one ulp of expf */
float kl_fpu_softmax_ce_f32(const float *z, int n, int label, const uint8_t *mask, float *dy);
void kl_fpu_softmax_ce_grad_f32(const float *z, int n, int label, const uint8_t *mask, float *dy);
#if KL_KERNELS_FPU
#define kl_softmax_ce_f32      kl_fpu_softmax_ce_f32
#define kl_softmax_ce_grad_f32 kl_fpu_softmax_ce_grad_f32
#else
#define kl_softmax_ce_f32      kl_ref_softmax_ce_f32
#define kl_softmax_ce_grad_f32 kl_ref_softmax_ce_grad_f32
#endif
/* int8 logits, table T[d] = round(2^15 exp(-d 2^lut_exp)); lut_shift =
 * logits_exp - lut_exp >= 0. dy in Q15 quantised to int8; returns the added
 * exponent s (dy scale 2^(s - 15)). */
int kl_softmax_ce_s8(const int8_t *z, int n, int label, const uint16_t *lut, int lut_shift,
		     const uint8_t *mask, int32_t *acc, int8_t *dy);

/* ---- regression and multi-label losses (docs/int8-training.md) ------------ */
/* Mean squared error L = (1/n) sum (y - t)^2: dy = 2 (y - t) / n; returns L. */
float kl_mse_f32(const float *y, const float *t, int n, float *dy);
/* int8 outputs y (scale 2^ey, zero point zy) against int8 targets t (2^et,
 * zt): both aligned to e = kl_mse_exp(ey, et) (the finer exponent, at most
 * KL_MSE_ALIGN_MAX bits below the coarser), d = their difference, acc = d *
 * round(2^16 / n), quantised to dy; returns dy's exponent. */
#define KL_MSE_ALIGN_MAX 6
int kl_mse_exp(int ey, int et);
int kl_mse_s8(const int8_t *y, int ey, int32_t zy, const int8_t *t, int et, int32_t zt, int n,
	      int32_t *acc, int8_t *dy);
/* sum of the squared aligned differences d (the anomaly score): the value
 * times 2^*exp (real units squared) */
uint32_t kl_mse_err_s8(const int8_t *y, int ey, int32_t zy, const int8_t *t, int et, int32_t zt,
		       int n, int *exp);
/* Sigmoid binary cross-entropy per output (binary or multi-label): dy =
 * sigmoid(z) - t; t NULL: the targets are onehot(label) (n > 1) or label
 * (n == 1). Returns the summed loss. */
float kl_sigmoid_bce_f32(const float *z, const float *t, int n, int label, float *dy);
/* int8 logits (zero point zz), targets 0 / nonzero; sigmoid(z) from the
 * softmax table as the two-class softmax of (z, 0), Q15; returns the added
 * exponent s (dy scale 2^(s - 15)). */
int kl_sigmoid_bce_s8(const int8_t *z, int32_t zz, int n, const int8_t *t, int label,
		      const uint16_t *lut, int lut_shift, int32_t *acc, int8_t *dy);

/* ---- optimisers (docs/int8-training.md) ------------------------------------- */
/* Adam on n parameters, the gradient g times scale (1/batch): m = b1 m + (1 -
 * b1) g; v = b2 v + (1 - b2) g^2; p -= lr (m c1) / (sqrt(v c2) + eps), with
 * c1 = 1 / (1 - b1^t), c2 = 1 / (1 - b2^t). */
void kl_adam_f32(float *p, float *mo, float *v, const float *g, float scale, float lr, float b1,
		 float b2, float c1, float c2, float eps, int n);
#define KL_MOM_FRAC_BITS 15          /* int8 momentum factor: Q15 */
#define KL_ACC_MAX       0x3FFFFFFFu /* int32 sums are kept below 2^30 */
/* acc (scale 2^ea) = acc * mu_q / 2^15 + g (scale 2^eg), both aligned to the
 * coarser exponent (rounded half away from zero), then shifted right
 * (rounded) until every |acc| <= KL_ACC_MAX; returns acc's new exponent.
 * mu_q = 2^15: a sum (a batch), 0: a copy of g, else momentum. */
int kl_accumulate_s8(int32_t *acc, int ea, int32_t mu_q, const int32_t *g, int eg, int n);

/* ---- selective updates (docs/selective-updates.md) ---------------------------
 * Top-r SGD (Kwon & Park): of the rows x cols weight updates of a layer only
 * the k_sel largest in magnitude are applied (ties: lower index first). The
 * updates are gw[k] * lr (gw != NULL, a kept or computed weight gradient) or,
 * fused for dense layers, dy[i] * x[j] * lr (int8: dy[i] * lr_q * (x[j] -
 * x_zp)); int8 steps are those of kl_sgd_weights_s8 with the same dither, which
 * advances over all rows * cols weights. hist: KL_TOPR_HIST_WORDS uint32_t
 * (float32), KL_TOPR_S8_BINS + KL_TOPR_S8_LIST (int8; fused dense: + 2 cols).
 * paired: the fused dense weights are in the paired layout (kl_fc_pair_s8).
 * Returns the number of weights updated (non-zero steps). Biases are not
 * touched. */
#define KL_TOPR_S8_BINS    129 /* |int8 step| in [0, 128] */
#define KL_TOPR_S8_LIST    128u /* words listing non-zero steps in the first pass */
#define KL_TOPR_HIST_WORDS 256u
uint32_t kl_topr_sgd_weights_s8(int8_t *w, const int32_t *gw, const int8_t *dy, const int8_t *x,
				int32_t x_zp, int rows, int cols, int32_t lr_q, int w_shift,
				uint32_t *dither, uint32_t k_sel, uint32_t *hist, int paired);
uint32_t kl_topr_sgd_weights_f32(float *w, const float *gw, const float *dy, const float *x,
				 int rows, int cols, float lr, uint32_t k_sel, uint32_t *hist);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_KERNELS_H */
