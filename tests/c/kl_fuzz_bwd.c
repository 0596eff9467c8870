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
#define MX 6000
static int8_t ws[MX], dys[MX];
static int32_t a0[MX], a1[MX];
static uint32_t scr[4096];

static long one_case(int it, int verbose)
{
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
