/* Fully connected forward, int8, through CMSIS-NN's arm_fully_connected_s8
 * (DSP / plain C builds of CMSIS-NN; its Helium path wants precomputed
 * kernel sums, which change with every training step: not used here). */
#include "kl_cmsis_nn.h"

int kl_cmsis_fully_connected_s8(KL_FC_S8_ARGS)
{
#if defined(ARM_MATH_MVEI)
	const int ok = 0;
#else
	const int ok = kl_cmsis_rq_ok(rq);
#endif
	if (!ok) {
		return KL_CMSIS_FALLBACK(fully_connected_s8)(x, x_zp, w, b, rq, y, n_in, n_out,
							      scratch);
	}
	/* the bias at the accumulator's scale: 4 * n_out bytes of the
	 * KL_FC_S8_SCRATCH area */
	int32_t *bq = (int32_t *)(void *)scratch;
	for (int i = 0; i < n_out; i++) {
		bq[i] = kl_rshift_round(b[i], rq->b_shift);
	}
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
