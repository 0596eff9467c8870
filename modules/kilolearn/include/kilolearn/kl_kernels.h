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

/* ---- quantisation helpers (src/kernels/ref/kl_quant.c) ----------------- */
int32_t kl_rshift_round(int32_t x, int s); /* s <= 0: left shift, saturating */
int32_t kl_sat32(int64_t x);
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
 * Returns 1 if an output saturated, else 0. */
int kl_fully_connected_s8(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *b,
			  int b_shift, int y_shift, int32_t y_zp, int relu, int8_t *y, int n_in,
			  int n_out);
/* acc = W^T dy, masked where mask[j] <= mask_zp (mask may be NULL), then
 * quantised to int8 dx; returns the added exponent s. */
int kl_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, const int8_t *mask,
					 int32_t mask_zp, int32_t *acc, int8_t *dx, int n_in,
					 int n_out);
/* gw = dy (x - x_zp)^T as int32 */
void kl_fully_connected_grad_s8(const int8_t *dy, const int8_t *x, int32_t x_zp, int32_t *gw,
				int n_in, int n_out);
/* Fused update: w -= floor((dy_i*lr_q*(x_j - x_zp) + dither) >> w_shift),
 * b -= rshift(dy_i*lr_q, b_shift). Returns the number of weights clamped. */
int kl_fully_connected_sgd_s8(int8_t *w, int32_t *b, const int8_t *dy, const int8_t *x,
			      int32_t x_zp, int32_t lr_q, int w_shift, int b_shift,
			      uint32_t *dither, int n_in, int n_out);
/* The same update from kept gradients (bit-identical to the fused one). */
int kl_sgd_weights_s8(int8_t *w, const int32_t *gw, int32_t lr_q, int w_shift, uint32_t *dither,
		      int n);
void kl_sgd_bias_s8(int32_t *b, const int8_t *gb, int32_t lr_q, int b_shift, int n);

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
