/*
 * kl_fuzz_mve: random shapes, zero points, activations, shifts, biases and
 * extreme values (every input +127 / -128, weights of -128 included) through
 * the mve kernels, compared with ref bit for bit: the dense forward (outputs
 * and saturation flag), input gradient, weight gradient and fused SGD step
 * (weights, biases, dither), the depthwise forward, input gradient and weight
 * gradient (odd channel counts, kernels 1-5, strides 1-3, padding, row bands
 * with a shifted pad_t and fewer output rows). Prints "KL fuzz done cases N
 * mismatches N"; without MVE there is nothing to compare (no cases).
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"
#include "kl_test_rand.h"

#if KL_KERNELS_MVE
#define MX 12000
static int8_t xs[MX], ws[MX], dys[MX], y0[MX], y1[MX], w0[MX], w1[MX];
static int32_t bs[512], b0[512], b1[512], a0[MX], a1[MX];
static uint32_t scr[8192];

static long one_case(int it, int verbose)
{
	const int fc = (it & 1) == 0;
	kl_geom_t g;
	memset(&g, 0, sizeof g);
	if (fc) {
		g.h = g.w = g.kh = g.kw = g.stride = 1;
		g.c = kl_test_rr(1, 300);
		g.co = kl_test_rr(1, 40);
		g.ho = g.wo = 1;
	} else {
		g.kh = (kl_test_rnd() & 1) ? 3 : kl_test_rr(1, 5);
		g.kw = (kl_test_rnd() & 1) ? g.kh : kl_test_rr(1, 5);
		g.stride = kl_test_rr(1, 3);
		g.pad_l = kl_test_rr(0, g.kw - 1);
		g.h = kl_test_rr(g.kh, 10);
		g.w = kl_test_rr(g.kw, 10);
		g.c = (kl_test_rnd() & 1) ? 8 * kl_test_rr(1, 6) : kl_test_rr(1, 40);
		g.co = g.c;
		g.wo = (g.w + 2 * g.pad_l - g.kw) / g.stride + 1;
		if (kl_test_rnd() & 1) { /* whole layer */
			g.pad_t = kl_test_rr(0, g.kh - 1);
			g.ho = (g.h + 2 * g.pad_t - g.kh) / g.stride + 1;
		} else { /* a row band: pad_t shifted (also negative), fewer rows */
			g.pad_t = kl_test_rr(-2, g.kh - 1);
			const int full = (g.h + g.pad_t + g.kh - 1 - g.kh) / g.stride + 1;
			g.ho = kl_test_rr(1, full > 1 ? full : 1);
			if ((g.ho - 1) * g.stride - g.pad_t + g.kh - 1 >= g.h + g.kh) {
				return -1;
			}
		}
		if (g.ho < 1 || g.wo < 1) {
			return -1;
		}
	}
	const long nx = (long)g.h * g.w * g.c, ny = (long)g.ho * g.wo * g.co;
	const long nw = fc ? (long)g.c * g.co : (long)g.kh * g.kw * g.c;
	if (nx > MX || nw > MX || ny > MX) {
		return -1;
	}
	const int ext = kl_test_rnd() % 8 == 0;
	kl_test_fill_s8(xs, nx, ext);
	kl_test_fill_s8(ws, nw, ext);
	kl_test_fill_s8(dys, ny, ext);
	for (long i = 0; i < ny; i += kl_test_rr(1, 9)) {
		dys[i] = 0;
	}
	kl_test_fill_bias(bs, g.co);
	kl_test_rq_t t;
	kl_requant_t rq;
	kl_test_rand_requant(&t, &rq);
	const int32_t x_zp = t.x_zp;
	if (kl_conv_s8_scratch(&g) > sizeof scr || KL_FC_S8_SCRATCH(g.c, g.co) > sizeof scr) {
		return -1;
	}
	long m = 0;
	int s0, s1;
	/* forward */
	memset(y0, 0x55, (size_t)ny);
	memset(y1, 0x33, (size_t)ny);
	if (fc) {
		s0 = kl_ref_fully_connected_s8(xs, x_zp, ws, bs, &rq, y0, g.c, g.co,
					       (int16_t *)(void *)scr);
		memset(scr, 0xA5, sizeof scr);
		s1 = kl_mve_fully_connected_s8(xs, x_zp, ws, bs, &rq, y1, g.c, g.co,
					       (int16_t *)(void *)scr);
	} else {
		s0 = kl_ref_depthwise_conv_s8(&g, xs, x_zp, ws, bs, &rq, y0, scr);
		memset(scr, 0xA5, sizeof scr);
		s1 = kl_mve_depthwise_conv_s8(&g, xs, x_zp, ws, bs, &rq, y1, scr);
	}
	m += (s0 != s1) + kl_test_diff_s8(y0, y1, ny);
	/* input gradient */
	memset(a1, 0x55, (size_t)nx * 4u);
	if (fc) {
		kl_ref_fully_connected_backward_input_s8(ws, dys, a0, g.c, g.co);
		kl_mve_fully_connected_backward_input_s8(ws, dys, a1, g.c, g.co);
	} else {
		kl_ref_depthwise_conv_backward_input_s8(&g, ws, dys, a0, scr);
		memset(scr, 0xA5, sizeof scr);
		kl_mve_depthwise_conv_backward_input_s8(&g, ws, dys, a1, scr);
	}
	m += kl_test_diff_s32(a0, a1, nx);
	/* weight gradient */
	memset(a1, 0x55, (size_t)nw * 4u);
	memset(b1, 0x55, (size_t)g.co * 4u);
	if (fc) {
		kl_ref_fully_connected_grad_s8(dys, xs, x_zp, a0, b0, g.c, g.co);
		kl_mve_fully_connected_grad_s8(dys, xs, x_zp, a1, b1, g.c, g.co);
	} else {
		kl_ref_depthwise_conv_grad_s8(&g, xs, x_zp, dys, a0, b0, scr);
		memset(scr, 0xA5, sizeof scr);
		kl_mve_depthwise_conv_grad_s8(&g, xs, x_zp, dys, a1, b1, scr);
	}
	m += kl_test_diff_s32(a0, a1, nw) + kl_test_diff_s32(b0, b1, g.co);
	/* the fused SGD step (dense) */
	if (fc) {
		const int32_t lr_q = (kl_test_rnd() % 5 == 0) ? (int32_t)kl_test_rnd() >> kl_test_rr(0, 31)
							      : kl_test_rr(-4096, 4096);
		const int w_shift = kl_test_rr(-1, 34), b_shift = kl_test_rr(-2, 20);
		uint32_t d0 = kl_test_rnd(), d1 = d0;
		memcpy(w0, ws, (size_t)nw);
		memcpy(w1, ws, (size_t)nw);
		memcpy(b0, bs, (size_t)g.co * 4u);
		memcpy(b1, bs, (size_t)g.co * 4u);
		kl_ref_fully_connected_sgd_s8(w0, b0, dys, xs, x_zp, lr_q, w_shift, b_shift, &d0,
					      g.c, g.co, (int16_t *)(void *)scr);
		memset(scr, 0xA5, sizeof scr);
		kl_mve_fully_connected_sgd_s8(w1, b1, dys, xs, x_zp, lr_q, w_shift, b_shift, &d1,
					      g.c, g.co, (int16_t *)(void *)scr);
		m += kl_test_diff_s8(w0, w1, nw) + kl_test_diff_s32(b0, b1, g.co) + (d0 != d1);
	}
	if (m && verbose) {
		kl_test_bad(it);
		out_str(fc ? " fc" : " dw");
		out_field(" c ", g.c);
		out_field(" co ", g.co);
		out_field(" kh ", g.kh);
		out_field(" kw ", g.kw);
		out_field(" s ", g.stride);
		out_field(" pt ", g.pad_t);
		out_field(" pl ", g.pad_l);
		out_field(" ho ", g.ho);
		out_field(" xzp ", x_zp);
		out_field(" ys ", t.ys);
		out_field(" bs ", t.bsh);
		out_field(" sat ", s0);
		out_int(s1);
		kl_test_diffs(m);
	}
	return m;
}

int main(int argc, char **argv)
{
	return kl_test_fuzz_main(argc, argv, 0x5EED0055u, 4000, one_case);
}
#else
int main(int argc, char **argv)
{
	return kl_test_fuzz_main(argc, argv, 0x5EED0055u, 0, NULL);
}
#endif
