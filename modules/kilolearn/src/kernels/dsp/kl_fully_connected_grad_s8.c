/* Fully connected layer, int8, dsp backend: the input gradient
 * acc = W^T dy (int32). Rows whose gradient is zero are skipped, the others
 * are taken four at a time (the last one to three with the same SIMD steps):
 * the bytes of two rows are paired per column with PKHBT / PKHTB after
 * SXTB16, so one SMLAD adds both rows' products with the packed (dy_a, dy_b).
 * Same integers as the ref kernel. */
#include "kilolearn/kl_kernels.h"

#if KL_KERNELS_DSP
#include "kl_dsp_conv.h"
#include "kl_dsp_util.h"

/* acc[j..j+3] += rows a, b (gradients packed in g) and rows c, d (in h) */
static inline void mac4x4(int32_t *acc, uint32_t wa, uint32_t wb, uint32_t g, uint32_t wc,
			  uint32_t wd, uint32_t h)
{
	const uint32_t ea = kl_sxtb16(wa), oa = kl_sxtb16_ror8(wa);
	const uint32_t eb = kl_sxtb16(wb), ob = kl_sxtb16_ror8(wb);
	int32_t a0 = kl_smlad(kl_pkhbt(ea, eb), g, acc[0]);
	int32_t a1 = kl_smlad(kl_pkhbt(oa, ob), g, acc[1]);
	int32_t a2 = kl_smlad(kl_pkhtb(eb, ea), g, acc[2]);
	int32_t a3 = kl_smlad(kl_pkhtb(ob, oa), g, acc[3]);
	const uint32_t ec = kl_sxtb16(wc), oc = kl_sxtb16_ror8(wc);
	const uint32_t ed = kl_sxtb16(wd), od = kl_sxtb16_ror8(wd);
	acc[0] = kl_smlad(kl_pkhbt(ec, ed), h, a0);
	acc[1] = kl_smlad(kl_pkhbt(oc, od), h, a1);
	acc[2] = kl_smlad(kl_pkhtb(ed, ec), h, a2);
	acc[3] = kl_smlad(kl_pkhtb(od, oc), h, a3);
}

static void rows4(int32_t *acc, const int8_t *const *r, const int32_t *gr, int n_in)
{
	const uint32_t g = ((uint32_t)gr[0] & 0xFFFFu) | ((uint32_t)gr[1] << 16);
	const uint32_t h = ((uint32_t)gr[2] & 0xFFFFu) | ((uint32_t)gr[3] << 16);
	const int8_t *ra = r[0], *rb = r[1], *rc = r[2], *rd = r[3];
	const int n4 = n_in & ~3;
	int j = 0;
	for (; j < n4; j += 4) {
		mac4x4(acc + j, kl_read_s8x4(ra + j), kl_read_s8x4(rb + j), g,
		       kl_read_s8x4(rc + j), kl_read_s8x4(rd + j), h);
	}
	for (; j < n_in; j++) {
		acc[j] += ra[j] * gr[0] + rb[j] * gr[1] + rc[j] * gr[2] + rd[j] * gr[3];
	}
}

/* two rows a, b: their bytes paired per column, one SMLAD each */
static void rows2(int32_t *acc, const int8_t *ra, const int8_t *rb, int32_t ga, int32_t gb,
		  int n_in)
{
	const uint32_t g = ((uint32_t)ga & 0xFFFFu) | ((uint32_t)gb << 16);
	const int n4 = n_in & ~3;
	int j = 0;
	for (; j < n4; j += 4) {
		const uint32_t wa = kl_read_s8x4(ra + j), wb = kl_read_s8x4(rb + j);
		const uint32_t ea = kl_sxtb16(wa), oa = kl_sxtb16_ror8(wa);
		const uint32_t eb = kl_sxtb16(wb), ob = kl_sxtb16_ror8(wb);
		acc[j] = kl_smlad(kl_pkhbt(ea, eb), g, acc[j]);
		acc[j + 1] = kl_smlad(kl_pkhbt(oa, ob), g, acc[j + 1]);
		acc[j + 2] = kl_smlad(kl_pkhtb(eb, ea), g, acc[j + 2]);
		acc[j + 3] = kl_smlad(kl_pkhtb(ob, oa), g, acc[j + 3]);
	}
	for (; j < n_in; j++) {
		acc[j] += ra[j] * ga + rb[j] * gb;
	}
}

/* one row: SMLABB / SMLATB on its sign-extended byte pairs */
static void row1(int32_t *acc, const int8_t *ra, int32_t ga, int n_in)
{
	const int n4 = n_in & ~3;
	int j = 0;
	for (; j < n4; j += 4) {
		const uint32_t wa = kl_read_s8x4(ra + j);
		const uint32_t ea = kl_sxtb16(wa), oa = kl_sxtb16_ror8(wa);
		acc[j] = __smlabb((int32_t)ea, ga, acc[j]);
		acc[j + 1] = __smlabb((int32_t)oa, ga, acc[j + 1]);
		acc[j + 2] = __smlatb((int32_t)ea, ga, acc[j + 2]);
		acc[j + 3] = __smlatb((int32_t)oa, ga, acc[j + 3]);
	}
	for (; j < n_in; j++) {
		acc[j] += ra[j] * ga;
	}
}

void kl_dsp_fully_connected_backward_input_s8(const int8_t *w, const int8_t *dy, int32_t *acc,
					      int n_in, int n_out)
{
	for (int j = 0; j < n_in; j++) {
		acc[j] = 0;
	}
	const int8_t *r[4];
	int32_t gr[4];
	int k = 0;
	for (int i = 0; i < n_out; i++) {
		if (dy[i] == 0) {
			continue;
		}
		r[k] = w + (long)i * n_in;
		gr[k] = dy[i];
		if (++k == 4) {
			rows4(acc, r, gr, n_in);
			k = 0;
		}
	}
	if (k == 3) { /* the last rows with a zero-gradient fourth */
		r[3] = r[0];
		gr[3] = 0;
		rows4(acc, r, gr, n_in);
	} else if (k == 2) {
		rows2(acc, r[0], r[1], gr[0], gr[1], n_in);
	} else if (k == 1) {
		row1(acc, r[0], gr[0], n_in);
	}
}
#else
typedef int kl_dsp_fully_connected_grad_s8_unused;
#endif
