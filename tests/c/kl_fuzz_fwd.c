/*
 * kl_fuzz_fwd: random shapes, zero points, activations, shifts and biases
 * through the dsp forward conv and FC kernels, compared with ref bit for bit
 * (outputs and saturation flag). Prints "KL fuzz done cases N mismatches N".
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"

#if KL_KERNELS_DSP /* (without dsp kernels there is nothing to compare) */
static uint32_t st = 0x2545F491u;
static uint32_t rnd(void)
{
	return kl_test_xorshift(&st);
}
static int rr(int lo, int hi)
{
	return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}
#endif


#if KL_KERNELS_DSP
#define MX 12000
static int8_t xs[MX], ws[MX], y0[MX], y1[MX];
static int32_t bs[512];
static uint32_t scr[8192];
#endif

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return 2;
	}
	long bad = 0, cases = 0;
#if KL_KERNELS_DSP
	for (int it = 0; it < 20000; it++) {
		const int fc = (it % 4) == 3;
		kl_geom_t g;
		memset(&g, 0, sizeof g);
		if (fc) {
			g.h = g.w = g.kh = g.kw = g.stride = 1;
			g.c = rr(1, 300);
			g.co = rr(1, 40);
		} else {
			g.kh = g.kw = (rnd() & 1) ? 1 : ((rnd() & 1) ? 3 : rr(1, 5));
			g.stride = rr(1, 2);
			g.pad_t = g.pad_l = rr(0, g.kh / 2);
			g.h = rr(g.kh, 10);
			g.w = rr(g.kw, 10);
			g.c = (rnd() & 1) ? 4 * rr(1, 16) : rr(1, 40);
			g.co = rr(1, 40);
		}
		g.ho = (g.h + 2 * g.pad_t - g.kh) / g.stride + 1;
		g.wo = (g.w + 2 * g.pad_l - g.kw) / g.stride + 1;
		const long nx = (long)g.h * g.w * g.c, nw = (long)g.co * g.kh * g.kw * g.c;
		const long ny = (long)g.ho * g.wo * g.co;
		if (nx > MX || nw > MX || ny > MX) {
			continue;
		}
		const int ext = rnd() % 8 == 0;
		for (long i = 0; i < nx; i++) {
			xs[i] = (int8_t)(ext ? ((rnd() & 1) ? 127 : -128) : rr(-128, 127));
		}
		for (long i = 0; i < nw; i++) {
			ws[i] = (int8_t)(ext ? ((rnd() & 1) ? 127 : -128) : rr(-128, 127));
		}
		const int bigb = rnd() % 6 == 0;
		for (int i = 0; i < g.co; i++) {
			bs[i] = bigb ? (int32_t)rnd() : rr(-40000, 40000);
		}
		const int zsel = rr(0, 3);
		const int32_t x_zp = zsel == 0 ? -128 : zsel == 1 ? 0 : rr(-128, 127);
		const int act = rr(0, 2);
		const int32_t y_zp = act != KL_ACT_NONE && (rnd() & 1) ? -128 : rr(-128, 127);
		const int ys = rr(-1, 24);
		const int bsh = rr(-2, 24);
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
				continue;
			}
			s0 = kl_ref_conv_s8(&g, xs, x_zp, ws, bs, &rq, y0, scr);
			memset(scr, 0xA5, sizeof scr);
			s1 = kl_dsp_conv_s8(&g, xs, x_zp, ws, bs, &rq, y1, scr);
		}
		cases++;
		long m = (s0 != s1);
		for (long i = 0; i < ny; i++) {
			m += y0[i] != y1[i];
		}
		if (m) {
			bad++;
			if (bad < 20) {
				out_str("KL fuzz bad it ");
				out_int(it);
				out_str(fc ? " fc" : " conv");
				out_str(" c ");
				out_int(g.c);
				out_str(" co ");
				out_int(g.co);
				out_str(" k ");
				out_int(g.kh);
				out_str(" npix ");
				out_int((long)g.ho * g.wo);
				out_str(" xzp ");
				out_int(x_zp);
				out_str(" yzp ");
				out_int(y_zp);
				out_str(" act ");
				out_int(act);
				out_str(" ys ");
				out_int(ys);
				out_str(" bs ");
				out_int(bsh);
				out_str(" sat ");
				out_int(s0);
				out_int(s1);
				out_str(" diffs ");
				out_int(m);
				out_str("\n");
			}
		}
	}
#endif
	return kl_test_done(cases, bad);
}
