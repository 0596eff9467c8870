/*
 * kl_fuzz_bwd: random conv geometries (kernels 1-5, strides 1-3, odd
 * channels, padding, row bands with shifted pad_t and fewer output rows)
 * through the dsp conv input gradient, compared with ref bit for bit; the
 * scratch is exactly kl_conv_s8_scratch() followed by a guard. Prints
 * "KL fuzz done cases N mismatches N".
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"


#if KL_KERNELS_DSP /* (without dsp kernels there is nothing to compare) */
static uint32_t st = 0x9E3779B9u;
static uint32_t rnd(void)
{
	return kl_test_xorshift(&st);
}
static int rr(int lo, int hi)
{
	return lo + (int)(rnd() % (uint32_t)(hi - lo + 1));
}
#define MX 6000
static int8_t ws[MX], dys[MX];
static int32_t a0[MX], a1[MX];
static uint32_t scr[4096];
#endif

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return 2;
	}
	long bad = 0, cases = 0;
#if KL_KERNELS_DSP
	for (int it = 0; it < 1500; it++) {
		kl_geom_t g;
		memset(&g, 0, sizeof g);
		g.kh = rr(1, 5);
		g.kw = (rnd() & 1) ? g.kh : rr(1, 5);
		g.stride = rr(1, 3);
		g.pad_l = rr(0, g.kw - 1);
		const int pad_b = rr(0, g.kh - 1);
		g.h = rr(1, 9);
		g.w = rr(g.kw > g.pad_l ? g.kw - 2 * g.pad_l > 1 ? g.kw - 2 * g.pad_l : 1 : 1, 11);
		g.c = (rnd() & 1) ? rr(1, 12) : 2 * rr(1, 8);
		g.co = (rnd() % 4 == 0) ? rr(1, 20) : 4 * rr(1, 6);
		g.wo = (g.w + 2 * g.pad_l - g.kw) / g.stride + 1;
		if (g.wo < 1) {
			continue;
		}
		if (rnd() & 1) { /* whole layer */
			g.pad_t = rr(0, g.kh - 1);
			const int hh = g.h + g.pad_t + pad_b - g.kh;
			if (hh < 0) {
				continue;
			}
			g.ho = hh / g.stride + 1;
		} else { /* a band: shifted pad_t, some output rows */
			g.pad_t = rr(-4, g.kh - 1);
			g.ho = rr(1, 6);
		}
		const long nx = (long)g.h * g.w * g.c, nw = (long)g.co * g.kh * g.kw * g.c;
		const long ny = (long)g.ho * g.wo * g.co;
		const uint32_t sb = kl_conv_s8_scratch(&g);
		if (nx > MX || nw > MX || ny > MX || sb + 64u > sizeof scr) {
			continue;
		}
		const int ext = rnd() % 8 == 0;
		for (long i = 0; i < nw; i++) {
			ws[i] = (int8_t)(ext ? ((rnd() & 1) ? 127 : -128) : rr(-128, 127));
		}
		for (long i = 0; i < ny; i++) {
			dys[i] = (int8_t)(ext ? ((rnd() & 1) ? 127 : -128) : rr(-128, 127));
		}
		for (long i = 0; i < nx; i++) {
			a0[i] = 0x11111111;
			a1[i] = 0x22222222;
		}
		kl_ref_conv_backward_input_s8(&g, ws, dys, a0, scr);
		memset(scr, 0xA5, sizeof scr);
		kl_dsp_conv_backward_input_s8(&g, ws, dys, a1, scr);
		cases++;
		long m = 0;
		for (long i = 0; i < nx; i++) {
			m += a0[i] != a1[i];
		}
		const uint8_t *guard = (const uint8_t *)scr + sb;
		for (int i = 0; i < 64; i++) {
			m += guard[i] != 0xA5;
		}
		if (m) {
			bad++;
			if (bad < 20) {
				out_str("KL fuzz bad it ");
				out_int(it);
				out_str(" h ");
				out_int(g.h);
				out_str(" w ");
				out_int(g.w);
				out_str(" c ");
				out_int(g.c);
				out_str(" co ");
				out_int(g.co);
				out_str(" k ");
				out_int(g.kh);
				out_int(g.kw);
				out_str(" s ");
				out_int(g.stride);
				out_str(" pad ");
				out_int(g.pad_t);
				out_str(",");
				out_int(g.pad_l);
				out_str(" ho ");
				out_int(g.ho);
				out_str(" diffs ");
				out_int(m);
				out_str("\n");
			}
		}
	}
#endif
	return kl_test_done(cases, bad);
}
