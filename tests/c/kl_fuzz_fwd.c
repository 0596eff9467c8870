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
#include "kl_test_rand.h"

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
	kl_test_fill_bias(bs, g.co);
	kl_test_rq_t t;
	kl_requant_t rq;
	kl_test_rand_requant(&t, &rq);
	const int32_t x_zp = t.x_zp;
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
	long m = (s0 != s1) + kl_test_diff_s8(y0, y1, ny);
	if (fc && (g.c & 3) == 0 && g.co >= 2) {
		kl_fc_pair_s8(ws, wp, g.c, g.co);
		memset(y1, 0x33, (size_t)ny);
		memset(scr, 0xA5, sizeof scr);
		const int s2 = kl_dsp_fully_connected_paired_s8(xs, x_zp, wp, bs, &rq, y1, g.c, g.co,
								 (int16_t *)(void *)scr);
		m += (s0 != s2) + kl_test_diff_s8(y0, y1, ny);
	}
	if (m && verbose) {
		kl_test_bad(it);
		out_str(fc ? " fc" : " conv");
		out_field(" c ", g.c);
		out_field(" co ", g.co);
		out_field(" k ", g.kh);
		out_field(" npix ", (long)g.ho * g.wo);
		out_field(" xzp ", x_zp);
		out_field(" yzp ", t.y_zp);
		out_field(" act ", t.act);
		out_field(" ys ", t.ys);
		out_field(" bs ", t.bsh);
		out_field(" sat ", s0);
		out_int(s1);
		kl_test_diffs(m);
	}
	return m;
}
#endif

KL_TEST_FUZZ_MAIN(0x2545F491u, 20000)
