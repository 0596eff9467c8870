/* Depthwise convolution forward (multiplier 1), int8, through CMSIS-NN's
 * arm_depthwise_conv_wrapper_s8 (3x3, optimised and general kernels). */
#include "kl_cmsis_nn.h"

static void dw_params(const kl_geom_t *g, const kl_requant_t *rq, int32_t x_zp,
		      cmsis_nn_dw_conv_params *p, cmsis_nn_dims *in, cmsis_nn_dims *f,
		      cmsis_nn_dims *out)
{
	cmsis_nn_conv_params c;
	kl_cmsis_conv_params(g, rq, x_zp, &c, in, out);
	p->input_offset = c.input_offset;
	p->output_offset = c.output_offset;
	p->ch_mult = 1;
	p->stride = c.stride;
	p->padding = c.padding;
	p->dilation = c.dilation;
	p->activation = c.activation;
	*f = (cmsis_nn_dims){1, g->kh, g->kw, g->c};
}

uint32_t kl_cmsis_depthwise_conv_s8_buffer(const kl_geom_t *g)
{
	cmsis_nn_dw_conv_params p;
	cmsis_nn_dims in, f, out;
	dw_params(g, NULL, 0, &p, &in, &f, &out);
	const int32_t n = arm_depthwise_conv_wrapper_s8_get_buffer_size(&p, &in, &f, &out);
	return n > 0 ? (uint32_t)n : 0u;
}

int kl_cmsis_depthwise_conv_prep_s8(KL_CONV_S8_ARGS, int32_t *prep, int bias_changed)
{
	if (!kl_cmsis_rq_ok(rq)) {
		return KL_CMSIS_FALLBACK(depthwise_conv_s8)(g, x, x_zp, w, b, rq, y, scratch);
	}
	cmsis_nn_per_channel_quant_params qp;
	const int32_t *bq = kl_cmsis_prepare(prep, rq, b, g->c, 1, bias_changed, &qp);
	cmsis_nn_dw_conv_params p;
	cmsis_nn_dims in, f, out;
	dw_params(g, rq, x_zp, &p, &in, &f, &out);
	const cmsis_nn_dims bd = {1, 1, 1, g->c};
	const cmsis_nn_context ctx = {scratch, prep[KL_CMSIS_PREP_BUF]};
	(void)arm_depthwise_conv_wrapper_s8(&ctx, &p, &qp, &in, x, &f, w, &bd, bq, &out, y);
	return kl_cmsis_sat(rq, y, g->ho * g->wo * g->c);
}

int kl_cmsis_depthwise_conv_s8(KL_CONV_S8_ARGS)
{
	int32_t *prep = (int32_t *)scratch; /* then CMSIS-NN's buffer (kl_cmsis_conv_s8_scratch) */
	kl_cmsis_prep_init(prep, KL_CMSIS_DW, g);
	return kl_cmsis_depthwise_conv_prep_s8(g, x, x_zp, w, b, rq, y,
					       (uint8_t *)scratch + KL_CMSIS_PREP_BYTES(g->c, 1),
					       prep, 1);
}
