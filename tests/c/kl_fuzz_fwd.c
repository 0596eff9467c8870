/*
 * kl_fuzz_fwd: random shapes, zero points, activations, shifts and biases
 * through the dsp forward conv and FC kernels, compared with ref bit for bit
 * (outputs and saturation flag); FC layers with n_in % 4 == 0 also through the
 * paired-layout kernel (kl_fc_pair_s8), as a trained layer runs them. Prints "KL fuzz done cases N mismatches N".
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"

#if KL_KERNELS_DSP /* (without dsp kernels there is nothing to compare) */
#define MX 12000
static int8_t xs[MX], ws[MX], y0[MX], y1[MX], wp[MX];
static int32_t bs[512];
static uint32_t scr[8192];

static long one_case(int it, int verbose)
{
	const int fc = (it % 4) == 3;
	kl_geom_t g;
	memset(&g, 0, sizeof g);
	if (fc) {
		g.h = g.w = g.kh = g.kw = g.stride = 1;
		g.c = (kl_test_rnd() & 1) ? 4 * kl_test_rr(1, 75) : kl_test_rr(1, 300);
		g.co = kl_test_rr(1, 40);
	} else {
		g.kh = g.kw = (kl_test_rnd() & 1) ? 1
			      : ((kl_test_rnd() & 1) ? 3 : kl_test_rr(1, 5));
		g.stride = kl_test_rr(1, 2);
		g.pad_t = g.pad_l = kl_test_rr(0, g.kh / 2);
		g.h = kl_test_rr(g.kh, 10);
		g.w = kl_test_rr(g.kw, 10);
		g.c = (kl_test_rnd() & 1) ? 4 * kl_test_rr(1, 16) : kl_test_rr(1, 40);
		g.co = kl_test_rr(1, 40);
	}
	g.ho = (g.h + 2 * g.pad_t - g.kh) / g.stride + 1;
	g.wo = (g.w + 2 * g.pad_l - g.kw) / g.stride + 1;
	const long nx = (long)g.h * g.w * g.c, nw = (long)g.co * g.kh * g.kw * g.c;
	const long ny = (long)g.ho * g.wo * g.co;
	if (nx > MX || nw > MX || ny > MX) {
		return -1;
	}
	const int ext = kl_test_rnd() % 8 == 0;
	kl_test_fill_s8(xs, nx, ext);
	kl_test_fill_s8(ws, nw, ext);
	const int bigb = kl_test_rnd() % 6 == 0;
	for (int i = 0; i < g.co; i++) {
		bs[i] = bigb ? (int32_t)kl_test_rnd() : kl_test_rr(-40000, 40000);
	}
	const int zsel = kl_test_rr(0, 3);
	const int32_t x_zp = zsel == 0 ? -128 : zsel == 1 ? 0 : kl_test_rr(-128, 127);
	const int act = kl_test_rr(0, 2);
	const int32_t y_zp =
		act != KL_ACT_NONE && (kl_test_rnd() & 1) ? -128 : kl_test_rr(-128, 127);
	const int ys = kl_test_rr(-1, 24);
	const int bsh = kl_test_rr(-2, 24);
	kl_requant_t rq;
	const int acc_exp = -12;
	kl_requant_init(&rq, acc_exp, acc_exp - bsh, acc_exp + ys, y_zp, act);
	rq.y_shift = ys;
	memset(y0, 0x55, (size_t)ny);
	memset(y1, 0x33, (size_t)ny);
	int s0, s1;
	if (fc) {
		s0 = kl_ref_fully_connected_s8(xs, x_zp, ws, bs, &rq, y0, g.c, g.co,
					       (int16_t *)(void *)scr);
		memset(scr, 0xA5, sizeof scr);
		s1 = kl_dsp_fully_connected_s8(xs, x_zp, ws, bs, &rq, y1, g.c, g.co,
					       (int16_t *)(void *)scr);
	} else {
		if (kl_conv_s8_scratch(&g) > sizeof scr) {
			return -1;
		}
		s0 = kl_ref_conv_s8(&g, xs, x_zp, ws, bs, &rq, y0, scr);
		memset(scr, 0xA5, sizeof scr);
		s1 = kl_dsp_conv_s8(&g, xs, x_zp, ws, bs, &rq, y1, scr);
	}
	long m = (s0 != s1);
	for (long i = 0; i < ny; i++) {
		m += y0[i] != y1[i];
	}
	if (fc && (g.c & 3) == 0 && g.co >= 2) {
		kl_fc_pair_s8(ws, wp, g.c, g.co);
		memset(y1, 0x33, (size_t)ny);
		memset(scr, 0xA5, sizeof scr);
		const int s2 = kl_dsp_fully_connected_paired_s8(xs, x_zp, wp, bs, &rq, y1, g.c, g.co,
								 (int16_t *)(void *)scr);
		m += (s0 != s2);
		for (long i = 0; i < ny; i++) {
			m += y0[i] != y1[i];
		}
	}
	if (m && verbose) {
		kl_test_bad(it);
		out_str(fc ? " fc" : " conv");
		out_field(" c ", g.c);
		out_field(" co ", g.co);
		out_field(" k ", g.kh);
		out_field(" npix ", (long)g.ho * g.wo);
		out_field(" xzp ", x_zp);
		out_field(" yzp ", y_zp);
		out_field(" act ", act);
		out_field(" ys ", ys);
		out_field(" bs ", bsh);
		out_field(" sat ", s0);
		out_int(s1);
		kl_test_diffs(m);
	}
	return m;
}
#endif

KL_TEST_FUZZ_MAIN(0x2545F491u, 20000)
