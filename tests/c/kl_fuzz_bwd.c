/*
 * kl_fuzz_bwd: random conv geometries (kernels 1-5, strides 1-3, odd
 * channels, padding, row bands with shifted pad_t and fewer output rows)
 * through the dsp conv input gradient, compared with ref bit for bit; the
 * scratch is exactly kl_conv_s8_scratch() followed by a guard. Every third
 * case is a dense layer in the paired layout (kl_fc_pair_s8: what a trained
 * layer runs) through the dsp input gradient and fused SGD step, against the
 * ref kernels on the plain layout (weights unpaired, biases, dither): inputs
 * at the zero point from none to all, step shifts 6-34 and bias shifts
 * -34-34, factors in and past a halfword (the SGD step's list, its walk in
 * parts, its dense path and its weight-by-weight one); the SGD step's
 * scratch stays within KL_FC_SGD_S8_SCRATCH() (a guard after it).
 * Prints "KL fuzz done cases N mismatches N".
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"


#if KL_KERNELS_DSP /* (without dsp kernels there is nothing to compare) */
#define MX 6000
static int8_t ws[MX], dys[MX];
static int32_t a0[MX], a1[MX];
static uint32_t scr[4096];
static int8_t xs[512], wq[MX], wr[MX];
static int32_t br[64], bq[64];

/* a dense layer, paired: input gradient and SGD step against ref */
static long fc_case(int it, int verbose)
{
	const int n_in = 4 * kl_test_rr(1, 80);
	int n_out = kl_test_rr(1, 48);
	if ((long)n_in * n_out > MX) {
		n_out = MX / n_in;
	}
	if (n_out < 2) {
		return -1;
	}
	const long nw = (long)n_in * n_out;
	for (long k = 0; k < nw; k++) { /* paired weights never hold -128 */
		ws[k] = (int8_t)kl_test_rr(-127, 127);
	}
	const int sparse = kl_test_rr(0, 3);
	for (int i = 0; i < n_out; i++) {
		dys[i] = kl_test_rr(0, 3) < sparse ? 0 : (int8_t)kl_test_rr(-128, 127);
		br[i] = bq[i] = (kl_test_rnd() % 8 == 0) ? (int32_t)kl_test_rnd()
							: kl_test_rr(-40000, 40000);
	}
	const int32_t x_zp = (kl_test_rnd() & 1) ? -128 : kl_test_rr(-128, 127);
	const int xsparse = kl_test_rr(0, 4); /* inputs at the zero point: none to all */
	for (int j = 0; j < n_in; j++) {
		xs[j] = kl_test_rr(0, 3) < xsparse ? (int8_t)x_zp : (int8_t)kl_test_rr(-128, 127);
	}
	kl_fc_pair_s8(ws, wq, n_in, n_out);
	long m = 0;
	kl_ref_fully_connected_backward_input_s8(ws, dys, a0, n_in, n_out);
	memset(a1, 0x55, (size_t)n_in * 4u);
	kl_dsp_fully_connected_backward_input_paired_s8(wq, dys, a1, n_in, n_out);
	for (int j = 0; j < n_in; j++) {
		m += a0[j] != a1[j];
	}
	const int32_t lr_q = (kl_test_rnd() & 1) ? kl_test_rr(1, 300) : kl_test_rr(1, 4096);
	const int w_shift = kl_test_rr(6, 34), b_shift = kl_test_rr(-34, 34);
	uint32_t d0 = kl_test_rnd(), d1 = d0;
	memcpy(wr, ws, (size_t)nw);
	memset(scr, 0xA5, sizeof scr);
	kl_ref_fully_connected_sgd_s8(wr, br, dys, xs, x_zp, lr_q, w_shift, b_shift, &d0, n_in,
				      n_out, (int16_t *)(void *)scr);
	memset(scr, 0xA5, sizeof scr);
	kl_dsp_fully_connected_sgd_paired_s8(wq, bq, dys, xs, x_zp, lr_q, w_shift, b_shift, &d1,
					     n_in, n_out, (int16_t *)(void *)scr);
	const uint8_t *guard = (const uint8_t *)scr + KL_FC_SGD_S8_SCRATCH(n_in, n_out);
	for (int k = 0; k < 64; k++) {
		m += guard[k] != 0xA5u;
	}
	kl_fc_unpair_s8(wq, ws, n_in, n_out);
	for (long k = 0; k < nw; k++) {
		m += wr[k] != ws[k];
	}
	for (int i = 0; i < n_out; i++) {
		m += br[i] != bq[i];
	}
	m += d0 != d1;
	if (m && verbose) {
		kl_test_bad(it);
		out_str(" fc paired");
		out_field(" n_in ", n_in);
		out_field(" n_out ", n_out);
		out_field(" lr_q ", lr_q);
		out_field(" w_shift ", w_shift);
		kl_test_diffs(m);
	}
	return m;
}

static long one_case(int it, int verbose)
{
	if (it % 3 == 2) {
		return fc_case(it, verbose);
	}
	kl_geom_t g;
	memset(&g, 0, sizeof g);
	g.kh = kl_test_rr(1, 5);
	g.kw = (kl_test_rnd() & 1) ? g.kh : kl_test_rr(1, 5);
	g.stride = kl_test_rr(1, 3);
	g.pad_l = kl_test_rr(0, g.kw - 1);
	const int pad_b = kl_test_rr(0, g.kh - 1);
	g.h = kl_test_rr(1, 9);
	g.w = kl_test_rr(
		g.kw > g.pad_l ? g.kw - 2 * g.pad_l > 1 ? g.kw - 2 * g.pad_l : 1 : 1, 11);
	g.c = (kl_test_rnd() & 1) ? kl_test_rr(1, 12) : 2 * kl_test_rr(1, 8);
	g.co = (kl_test_rnd() % 4 == 0) ? kl_test_rr(1, 20) : 4 * kl_test_rr(1, 6);
	g.wo = (g.w + 2 * g.pad_l - g.kw) / g.stride + 1;
	if (g.wo < 1) {
		return -1;
	}
	if (kl_test_rnd() & 1) { /* whole layer */
		g.pad_t = kl_test_rr(0, g.kh - 1);
		const int hh = g.h + g.pad_t + pad_b - g.kh;
		if (hh < 0) {
			return -1;
		}
		g.ho = hh / g.stride + 1;
	} else { /* a band: shifted pad_t, some output rows */
		g.pad_t = kl_test_rr(-4, g.kh - 1);
		g.ho = kl_test_rr(1, 6);
	}
	const long nx = (long)g.h * g.w * g.c, nw = (long)g.co * g.kh * g.kw * g.c;
	const long ny = (long)g.ho * g.wo * g.co;
	const uint32_t sb = kl_conv_s8_scratch(&g);
	if (nx > MX || nw > MX || ny > MX || sb + 64u > sizeof scr) {
		return -1;
	}
	const int ext = kl_test_rnd() % 8 == 0;
	kl_test_fill_s8(ws, nw, ext);
	kl_test_fill_s8(dys, ny, ext);
	for (long i = 0; i < nx; i++) {
		a0[i] = 0x11111111;
		a1[i] = 0x22222222;
	}
	kl_ref_conv_backward_input_s8(&g, ws, dys, a0, scr);
	memset(scr, 0xA5, sizeof scr);
	kl_dsp_conv_backward_input_s8(&g, ws, dys, a1, scr);
	long m = 0;
	for (long i = 0; i < nx; i++) {
		m += a0[i] != a1[i];
	}
	const uint8_t *guard = (const uint8_t *)scr + sb;
	for (int i = 0; i < 64; i++) {
		m += guard[i] != 0xA5;
	}
	if (m && verbose) {
		kl_test_bad(it);
		out_field(" h ", g.h);
		out_field(" w ", g.w);
		out_field(" c ", g.c);
		out_field(" co ", g.co);
		out_field(" k ", g.kh);
		out_int(g.kw);
		out_field(" s ", g.stride);
		out_field(" pad ", g.pad_t);
		out_field(",", g.pad_l);
		out_field(" ho ", g.ho);
		kl_test_diffs(m);
	}
	return m;
}
#endif

KL_TEST_FUZZ_MAIN(0x9E3779B9u, 1500)
