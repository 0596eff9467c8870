/*
 * The CMSIS-NN backend really runs (built only with CONFIG_KILOLEARN_KERNELS_CMSIS_NN).
 *
 * The test links with -Wl,--wrap for CMSIS-NN's three entry points the backend calls
 * (CMakeLists.txt), so every call into CMSIS-NN is counted here before it goes on. The
 * suite checks that the engine's generic kernel names are the kl_cmsis_* ones, that
 * kl_cmsis_fully_connected_s8 / kl_cmsis_conv_s8 / kl_cmsis_depthwise_conv_s8 on small
 * layers call CMSIS-NN exactly once each and agree with kl_ref_* bit for bit (outputs and
 * saturation flag), and main.c checks that the golden int8 cases went through CMSIS-NN.
 */
#include <string.h>

#include <zephyr/kernel.h>
#include <zephyr/sys/util.h>
#include <zephyr/ztest.h>

#include <arm_nnfunctions.h>
#include <kilolearn/kl_kernels.h>

#include "cmsis_calls.h"

#if !(defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN)
#error "cmsis_nn.c is built only with CONFIG_KILOLEARN_KERNELS_CMSIS_NN (KL_KERNELS_CMSIS_NN=1)"
#endif

/* ---- counting wrappers (-Wl,--wrap=<name>) ---------------------------------------------- */

static struct kl_test_cmsis_calls calls;

void kl_test_cmsis_calls_get(struct kl_test_cmsis_calls *out)
{
	*out = calls;
}

#define KL_CMSIS_S8_PARAMS(params_t, qparams_t)                                                  \
	const cmsis_nn_context *ctx, const params_t *params, const qparams_t *qp,                \
		const cmsis_nn_dims *in_dims, const int8_t *in, const cmsis_nn_dims *f_dims,     \
		const int8_t *f, const cmsis_nn_dims *b_dims, const int32_t *b,                  \
		const cmsis_nn_dims *out_dims, int8_t *out

arm_cmsis_nn_status __real_arm_fully_connected_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_fc_params, cmsis_nn_per_tensor_quant_params));
arm_cmsis_nn_status __wrap_arm_fully_connected_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_fc_params, cmsis_nn_per_tensor_quant_params));
arm_cmsis_nn_status __real_arm_convolve_wrapper_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_conv_params, cmsis_nn_per_channel_quant_params));
arm_cmsis_nn_status __wrap_arm_convolve_wrapper_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_conv_params, cmsis_nn_per_channel_quant_params));
arm_cmsis_nn_status __real_arm_depthwise_conv_wrapper_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_dw_conv_params, cmsis_nn_per_channel_quant_params));
arm_cmsis_nn_status __wrap_arm_depthwise_conv_wrapper_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_dw_conv_params, cmsis_nn_per_channel_quant_params));

arm_cmsis_nn_status __wrap_arm_fully_connected_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_fc_params, cmsis_nn_per_tensor_quant_params))
{
	calls.fc++;
	return __real_arm_fully_connected_s8(ctx, params, qp, in_dims, in, f_dims, f, b_dims, b,
					     out_dims, out);
}

arm_cmsis_nn_status __wrap_arm_convolve_wrapper_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_conv_params, cmsis_nn_per_channel_quant_params))
{
	calls.conv++;
	return __real_arm_convolve_wrapper_s8(ctx, params, qp, in_dims, in, f_dims, f, b_dims, b,
					      out_dims, out);
}

arm_cmsis_nn_status __wrap_arm_depthwise_conv_wrapper_s8(
	KL_CMSIS_S8_PARAMS(cmsis_nn_dw_conv_params, cmsis_nn_per_channel_quant_params))
{
	calls.dw++;
	return __real_arm_depthwise_conv_wrapper_s8(ctx, params, qp, in_dims, in, f_dims, f,
						    b_dims, b, out_dims, out);
}

/* ---- small layers: CMSIS-NN against ref ------------------------------------------------- */

static uint32_t rng = 0x12345678u;

static int8_t rand_s8(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 17;
	rng ^= rng << 5;
	return (int8_t)(rng >> 24);
}

static void fill_s8(int8_t *p, size_t n, int lim)
{
	for (size_t i = 0; i < n; i++) {
		const int v = rand_s8();

		p[i] = (int8_t)(v > lim ? lim : (v < -lim ? -lim : v));
	}
}

static void fill_bias(int32_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		p[i] = (int32_t)rand_s8() * 37;
	}
}

/* output stages CMSIS-NN takes (y_shift in [1, 31]): every activation, the bias at the
 * accumulator's scale and shifted left and right, input and output zero points */
struct rq_case {
	int act, b_exp, y_exp;
	int32_t x_zp, y_zp;
};

static const struct rq_case rq_cases[] = {
	{KL_ACT_NONE, -14, -6, 0, 0},    /* y_shift 8, bias as is */
	{KL_ACT_RELU, -12, -7, -128, -128}, /* ReLU, zp -128: the USAT fast path in ref */
	{KL_ACT_RELU6, -16, -5, 3, -100}, /* bias rounded right, cap below the range */
	{KL_ACT_NONE, -14, -10, -5, 7},   /* y_shift 4: outputs saturate both ends */
	{KL_ACT_RELU, -14, -1, 0, 0},     /* y_shift 13: small outputs */
};

#define ACC_EXP (-14) /* x_exp -7, w_exp -7 */

static void rq_init(kl_requant_t *rq, const struct rq_case *c)
{
	kl_requant_init(rq, ACC_EXP, c->b_exp, c->y_exp, c->y_zp, c->act);
	zassert_true(rq->y_shift >= 1 && rq->y_shift <= 31, "a shift CMSIS-NN takes");
}

static int8_t xs[6 * 6 * 8], ws[8 * 3 * 3 * 8], y_cmsis[512], y_ref[512];
static int32_t bs[16];
static uint32_t scratch[1024];

ZTEST(kilolearn_cmsis_nn, test_backend_is_cmsis_nn)
{
	/* the names the engine calls (src/model/kl_ops.c) resolve to the CMSIS-NN kernels */
	zassert_str_equal(STRINGIFY(kl_fully_connected_s8), "kl_cmsis_fully_connected_s8");
	zassert_str_equal(STRINGIFY(kl_conv_s8), "kl_cmsis_conv_s8");
	zassert_str_equal(STRINGIFY(kl_depthwise_conv_s8), "kl_cmsis_depthwise_conv_s8");
}

ZTEST(kilolearn_cmsis_nn, test_fully_connected_matches_ref)
{
	const int n_in = 27, n_out = 13;
	int sats = 0;

	zassert_true(KL_FC_S8_SCRATCH(n_in, n_out) <= sizeof(scratch));
	for (size_t k = 0; k < ARRAY_SIZE(rq_cases); k++) {
		const struct rq_case *c = &rq_cases[k];
		kl_requant_t rq;
		struct kl_test_cmsis_calls before, after;

		rq_init(&rq, c);
		fill_s8(xs, (size_t)n_in, 127);
		fill_s8(ws, (size_t)n_in * n_out, 127);
		fill_bias(bs, (size_t)n_out);
		memset(y_cmsis, 0x55, sizeof(y_cmsis));
		kl_test_cmsis_calls_get(&before);
		const int sc = kl_cmsis_fully_connected_s8(xs, c->x_zp, ws, bs, &rq, y_cmsis, n_in,
							   n_out, (int16_t *)scratch);
		kl_test_cmsis_calls_get(&after);
		zassert_equal(after.fc, before.fc + 1, "case %d: arm_fully_connected_s8 not called",
			      (int)k);
		const int sr = kl_ref_fully_connected_s8(xs, c->x_zp, ws, bs, &rq, y_ref, n_in,
							 n_out, (int16_t *)scratch);
		zassert_mem_equal(y_cmsis, y_ref, (size_t)n_out, "case %d: outputs differ", (int)k);
		zassert_equal(sc, sr, "case %d: saturation flag %d, ref %d", (int)k, sc, sr);
		sats += sr;
	}
	zassert_true(sats > 0, "no case saturated: the flag is untested");
}

static void check_conv(int depthwise, const kl_geom_t *g)
{
	const size_t n_x = (size_t)g->h * g->w * g->c;
	const size_t n_w = depthwise ? (size_t)g->kh * g->kw * g->c
				     : (size_t)g->co * g->kh * g->kw * g->c;
	const size_t n_y = (size_t)g->ho * g->wo * g->co;

	zassert_true(n_x <= sizeof(xs) && n_w <= sizeof(ws) && n_y <= sizeof(y_ref));
	zassert_true(KL_CONV_S8_SCRATCH(g) <= sizeof(scratch), "scratch %u bytes",
		     (unsigned int)KL_CONV_S8_SCRATCH(g));
	for (size_t k = 0; k < ARRAY_SIZE(rq_cases); k++) {
		const struct rq_case *c = &rq_cases[k];
		kl_requant_t rq;
		struct kl_test_cmsis_calls before, after;
		int sc, sr;

		rq_init(&rq, c);
		fill_s8(xs, n_x, 127);
		fill_s8(ws, n_w, 127);
		fill_bias(bs, (size_t)g->co);
		memset(y_cmsis, 0x55, sizeof(y_cmsis));
		kl_test_cmsis_calls_get(&before);
		if (depthwise) {
			sc = kl_cmsis_depthwise_conv_s8(g, xs, c->x_zp, ws, bs, &rq, y_cmsis,
							scratch);
			sr = kl_ref_depthwise_conv_s8(g, xs, c->x_zp, ws, bs, &rq, y_ref, scratch);
		} else {
			sc = kl_cmsis_conv_s8(g, xs, c->x_zp, ws, bs, &rq, y_cmsis, scratch);
			sr = kl_ref_conv_s8(g, xs, c->x_zp, ws, bs, &rq, y_ref, scratch);
		}
		kl_test_cmsis_calls_get(&after);
		if (depthwise) {
			zassert_equal(after.dw, before.dw + 1,
				      "case %d: arm_depthwise_conv_wrapper_s8 not called", (int)k);
		} else {
			zassert_equal(after.conv, before.conv + 1,
				      "case %d: arm_convolve_wrapper_s8 not called", (int)k);
		}
		zassert_mem_equal(y_cmsis, y_ref, n_y, "%s %dx%d case %d: outputs differ",
				  depthwise ? "depthwise" : "conv", g->kh, g->kw, (int)k);
		zassert_equal(sc, sr, "case %d: saturation flag %d, ref %d", (int)k, sc, sr);
	}
}

ZTEST(kilolearn_cmsis_nn, test_conv_matches_ref)
{
	/* 3x3 stride 1 padded, 1x1, 3x3 stride 2 unpadded */
	const kl_geom_t g3 = {.h = 6, .w = 6, .c = 3, .ho = 6, .wo = 6, .co = 8,
			      .kh = 3, .kw = 3, .stride = 1, .pad_t = 1, .pad_l = 1};
	const kl_geom_t g1 = {.h = 5, .w = 5, .c = 8, .ho = 5, .wo = 5, .co = 6,
			      .kh = 1, .kw = 1, .stride = 1};
	const kl_geom_t g3s2 = {.h = 6, .w = 6, .c = 4, .ho = 2, .wo = 2, .co = 5,
				.kh = 3, .kw = 3, .stride = 2};

	check_conv(0, &g3);
	check_conv(0, &g1);
	check_conv(0, &g3s2);
}

ZTEST(kilolearn_cmsis_nn, test_depthwise_matches_ref)
{
	const kl_geom_t g3 = {.h = 6, .w = 6, .c = 8, .ho = 6, .wo = 6, .co = 8,
			      .kh = 3, .kw = 3, .stride = 1, .pad_t = 1, .pad_l = 1};
	const kl_geom_t g3s2 = {.h = 6, .w = 6, .c = 5, .ho = 3, .wo = 3, .co = 5,
				.kh = 3, .kw = 3, .stride = 2, .pad_t = 1, .pad_l = 1};

	check_conv(1, &g3);
	check_conv(1, &g3s2);
}

ZTEST_SUITE(kilolearn_cmsis_nn, NULL, NULL, NULL, NULL, NULL);
