/* Fully connected layer, int8, dsp backend: the input gradient
 * acc = W^T dy (int32). Rows whose gradient is zero are skipped, the others
 * are taken four at a time: the bytes of two rows are paired per column with
 * PKHBT / PKHTB after SXTB16, so one SMLAD adds both rows' products with the
 * packed (dy_a, dy_b). Same integers as the ref kernel. */
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
	for (int q = 0; q < k; q++) { /* the last one to three rows */
		for (int j = 0; j < n_in; j++) {
			acc[j] += (int32_t)r[q][j] * gr[q];
		}
	}
}
#else
typedef int kl_dsp_fully_connected_grad_s8_unused;
#endif
