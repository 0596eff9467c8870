/* Shared helpers of the CMSIS-NN backend (forward int8 kernels through
 * CMSIS-NN). Built only when CMSIS-NN is present: Zephyr with
 * CONFIG_KILOLEARN_KERNELS_CMSIS_NN, standalone with -DKL_CMSIS_NN_DIR=...
 *
 * kilolearn's scales are powers of two, so an output shift s is CMSIS-NN's
 * multiplier 1 << 30 with shift 1 - s; CMSIS-NN's arm_nn_requantize then
 * rounds exactly as kl_requant_shift does (docs/int8-training.md). Shifts
 * CMSIS-NN cannot take (s < 1 or s > 31) run the default kernels. */
#ifndef KL_CMSIS_NN_H
#define KL_CMSIS_NN_H

#include "arm_nnfunctions.h"
#include "kilolearn/kl_kernels.h"

/* the kernels without CMSIS-NN (dsp where the core has it, else ref) */
#if KL_KERNELS_DSP
#define KL_CMSIS_FALLBACK(name) kl_dsp_##name
#else
#define KL_CMSIS_FALLBACK(name) kl_ref_##name
#endif

static inline int kl_cmsis_rq_ok(const kl_requant_t *rq)
{
	return rq->y_shift >= 1 && rq->y_shift <= 31;
}

static inline cmsis_nn_activation kl_cmsis_act(const kl_requant_t *rq)
{
	cmsis_nn_activation a = {rq->lo + rq->zp, rq->hi + rq->zp};
	return a;
}

/* The saturation flag from the outputs alone (kl_requant_clamp's rule: an
 * output at the top of the int8 range when the range is the cap, at the
 * bottom without an activation). */
static inline int kl_cmsis_sat(const kl_requant_t *rq, const int8_t *y, int n)
{
	const int top = rq->cap_saturates, bottom = rq->act == KL_ACT_NONE;
	int sat = 0;
	for (int i = 0; i < n; i++) {
		sat |= (top & (y[i] == 127)) | (bottom & (y[i] == -128));
	}
	return sat;
}

/* The convolution parameters of a kilolearn geometry (rq NULL: only the
 * shape, for buffer sizes); the depthwise kernels take the same values. */
static inline void kl_cmsis_conv_params(const kl_geom_t *g, const kl_requant_t *rq,
					int32_t x_zp, cmsis_nn_conv_params *p, cmsis_nn_dims *in,
					cmsis_nn_dims *out)
{
	p->input_offset = -x_zp;
	p->output_offset = rq != NULL ? rq->zp : 0;
	p->stride.w = g->stride;
	p->stride.h = g->stride;
	p->padding.w = g->pad_l;
	p->padding.h = g->pad_t;
	p->dilation.w = 1;
	p->dilation.h = 1;
	if (rq != NULL) {
		p->activation = kl_cmsis_act(rq);
	} else {
		p->activation.min = -128;
		p->activation.max = 127;
	}
	*in = (cmsis_nn_dims){1, g->h, g->w, g->c};
	*out = (cmsis_nn_dims){1, g->ho, g->wo, g->co};
}

/* per-output-channel parameters in the scratch: the bias shifted to the
 * accumulator's scale, multipliers, shifts; returns the bytes used */
static inline uint32_t kl_cmsis_channels(const kl_requant_t *rq, const int32_t *b, int co,
					 void *scratch, int32_t **bq,
					 cmsis_nn_per_channel_quant_params *qp)
{
	int32_t *p = (int32_t *)scratch;
	*bq = p;
	qp->multiplier = p + co;
	qp->shift = p + 2 * co;
	for (int i = 0; i < co; i++) {
		p[i] = kl_rshift_round(b[i], rq->b_shift);
		p[co + i] = (int32_t)1 << 30;
		p[2 * co + i] = 1 - rq->y_shift;
	}
	return 12u * (uint32_t)co;
}

#endif
