/* Fully connected forward, int8, through CMSIS-NN's arm_fully_connected_s8
 * (DSP / plain C builds of CMSIS-NN; its Helium path wants precomputed
 * kernel sums, which change with every training step: not used here). */
#include "kl_cmsis_nn.h"

void kl_cmsis_prep_init(int32_t *prep, int kind, const kl_geom_t *g)
{
	prep[KL_CMSIS_PREP_KEY_B] = INT32_MIN;
	prep[KL_CMSIS_PREP_KEY_Y] = INT32_MIN;
	uint32_t buf = 0u;
	if (kind == KL_CMSIS_CONV) {
		buf = kl_cmsis_conv_s8_buffer(g);
	} else if (kind == KL_CMSIS_DW) {
		buf = kl_cmsis_depthwise_conv_s8_buffer(g);
	}
	prep[KL_CMSIS_PREP_BUF] = (int32_t)buf;
}

/* the CMSIS-NN call on biases at the accumulator's scale */
static inline __attribute__((always_inline)) int
fc_call(const int8_t *x, int32_t x_zp, const int8_t *w, const int32_t *bq, const kl_requant_t *rq,
	int8_t *y, int n_in, int n_out)
{
	const cmsis_nn_context ctx = {NULL, 0};
	const cmsis_nn_fc_params fc = {-x_zp, 0, rq->zp, kl_cmsis_act(rq)};
	const cmsis_nn_per_tensor_quant_params qp = {(int32_t)1 << 30, 1 - rq->y_shift};
	const cmsis_nn_dims in_dims = {1, 1, 1, n_in};
	const cmsis_nn_dims w_dims = {n_in, 1, 1, n_out};
	const cmsis_nn_dims b_dims = {1, 1, 1, n_out};
	const cmsis_nn_dims out_dims = {1, 1, 1, n_out};
	(void)arm_fully_connected_s8(&ctx, &fc, &qp, &in_dims, x, &w_dims, w, &b_dims, bq,
				     &out_dims, y);
	return kl_cmsis_sat(rq, y, n_out);
}

static int fc_ok(const kl_requant_t *rq)
{
#if defined(ARM_MATH_MVEI)
	(void)rq;
	return 0;
#else
	return kl_cmsis_rq_ok(rq);
#endif
}

int kl_cmsis_fully_connected_prep_s8(KL_FC_S8_ARGS, int32_t *prep, int bias_changed)
{
	if (!fc_ok(rq)) {
		return KL_CMSIS_FALLBACK(fully_connected_s8)(x, x_zp, w, b, rq, y, n_in, n_out,
							      scratch);
	}
	const int32_t *bq = kl_cmsis_prepare(prep, rq, b, n_out, 0, bias_changed, NULL);
	return fc_call(x, x_zp, w, bq, rq, y, n_in, n_out);
}

int kl_cmsis_fully_connected_s8(KL_FC_S8_ARGS)
{
	if (!fc_ok(rq)) {
		return KL_CMSIS_FALLBACK(fully_connected_s8)(x, x_zp, w, b, rq, y, n_in, n_out,
							      scratch);
	}
	/* the bias at the accumulator's scale: 4 * n_out bytes of the
	 * KL_FC_S8_SCRATCH area */
	int32_t *bq = (int32_t *)(void *)scratch;
	kl_cmsis_rescale(bq, b, n_out, rq->b_shift);
	return fc_call(x, x_zp, w, bq, rq, y, n_in, n_out);
}
