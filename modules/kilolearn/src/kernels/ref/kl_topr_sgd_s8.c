/* Top-r SGD update, int8 (Kwon & Park, selective updates by gradient delta):
 * of a layer's weight steps only the k largest in magnitude are applied.
 * The threshold comes from one histogram pass over |step| (a step is an int8
 * value, so |step| <= 128 and the histogram is exact): no sort, no copy of
 * the steps. Ties at the threshold go to the lower index.
 *
 * Only a non-zero gradient makes a non-zero step (the dither alone stays
 * below one step) and a zero step is never chosen, so only the non-zero
 * gradients are visited: of a fused dense update the rows with dy != 0 times
 * a list of the columns with x != x_zp (built once per call), each weight's
 * dither taken from its index (d + index * W, the Weyl sequence the full
 * update runs through). One pass lists the non-zero steps (index and step in
 * a word); when they fit the list, the threshold comes from them and they
 * are applied from it: one pass over the non-zero gradients in all, and
 * typically few steps are non-zero. Otherwise a second pass applies the
 * chosen ones (the histogram, made in the first, gives the threshold) and
 * ends at the last of them. The dense layer's weights may be in the
 * dsp backend's paired layout (kl_fc_pair_s8).
 *
 * Scratch (hist): KL_TOPR_S8_BINS words of histogram, KL_TOPR_S8_LIST of
 * listed steps, then (fused dense) one word per input column. */
#include <stddef.h>

#include "kilolearn/kl_kernels.h"

/* w - s within [-127, 127] (s an int8 step) */
static inline int8_t sub_clamp(int32_t wv, int32_t s)
{
	const int32_t r = wv - s;
	return (int8_t)(r > 127 ? 127 : (r < -127 ? -127 : r));
}

/* where row i's weights live: weight j at base + gs (j >> 2) + o4[j & 3],
 * its sign bit flipped by `flip` (the paired layout's first row) */
struct topr_row {
	uint32_t base, gs;
	const uint8_t *o4;
	uint8_t flip;
};

static const uint8_t plain4[4] = {0, 1, 2, 3};
/* kl_fc_paired_offset within a group of four columns: (w0[c], w1[c],
 * w0[c + 2], w1[c + 2]) then c + 1 and c + 3 (the row's parity in base) */
static const uint8_t paired4[4] = {0, 4, 2, 6};

static void row_at(struct topr_row *r, int i, int cols, int rows, int paired)
{
	if (!paired || i >= (rows & ~1)) { /* plain (the paired layout's odd last row too) */
		r->base = (uint32_t)i * (uint32_t)cols;
		r->gs = 4u;
		r->o4 = plain4;
		r->flip = 0u;
		return;
	}
	int gs;
	r->base = (uint32_t)kl_fc_pair_at(i >> 1, cols, rows, &gs) + (uint32_t)(i & 1);
	r->gs = (uint32_t)gs;
	r->o4 = paired4;
	r->flip = (i & 1) == 0 ? 0x80u : 0u;
}

static inline void apply_at(int8_t *w, const struct topr_row *r, int j, int32_t s)
{
	int8_t *p = w + r->base + r->gs * ((uint32_t)j >> 2) + r->o4[j & 3];
	*p = (int8_t)((uint8_t)sub_clamp((int8_t)((uint8_t)*p ^ r->flip), s) ^ r->flip);
}

/* the threshold of the k_sel largest |steps| from their histogram: *t the
 * k-th largest (0 when fewer are non-zero: all of them apply), returns how
 * many equal to *t are taken (the first ones in index order) */
static uint32_t threshold(const uint32_t *hist, uint32_t k_sel, int *t)
{
	uint32_t above = 0;
	int v = KL_TOPR_S8_BINS - 1;
	while (v > 0 && above + hist[v] < k_sel) {
		above += hist[v--];
	}
	*t = v;
	return v > 0 ? k_sel - above : 0u;
}

/* is |s| among the chosen (t, at_t from threshold)? */
static inline int chosen(int32_t s, int t, uint32_t *at_t)
{
	const int a = s < 0 ? -s : s;
	if (a == 0 || a < t) {
		return 0;
	}
	if (a == t) {
		if (*at_t == 0u) {
			return 0;
		}
		(*at_t)--;
	}
	return 1;
}

enum { LIST, APPLY };

struct topr_pass {
	int mode;
	uint32_t *out, kept, cnt; /* LIST: (index << 8 | step) while they fit; cnt all */
	uint32_t *hist;           /* LIST: of |step|, once the list is full */
	int8_t *w;                /* APPLY: the chosen steps (t, at_t), at most k_sel */
	uint32_t limit;           /* a pass ends once cnt reaches it */
	int paired, t;
	uint32_t at_t;
};

/* the histogram of |step| of the first n listed steps */
static void hist_of_list(uint32_t *hist, const uint32_t *out, uint32_t n)
{
	for (int v = 0; v < KL_TOPR_S8_BINS; v++) {
		hist[v] = 0;
	}
	for (uint32_t e = 0; e < n; e++) {
		const int32_t s = (int8_t)(out[e] & 0xFFu);
		hist[s < 0 ? -s : s]++;
	}
}

/* LIST: step s of index k listed while the list has room; past it, the
 * histogram takes over (made from the list when it fills) */
static inline void list_one(struct topr_pass *p, uint32_t k, int32_t s)
{
	if (p->cnt < p->kept) {
		p->out[p->cnt] = k << 8 | (uint8_t)s;
	} else {
		if (p->cnt == p->kept) {
			hist_of_list(p->hist, p->out, p->kept);
		}
		p->hist[s < 0 ? -s : s]++;
	}
	p->cnt++;
}

/* the non-zero step s of weight (i, j), index k, in a pass */
static void visit(struct topr_pass *p, struct topr_row *r, int i, int j, uint32_t k, int32_t s,
		  int rows, int cols)
{
	s = s > 127 ? 127 : (s < -128 ? -128 : s);
	if (p->mode == LIST) {
		list_one(p, k, s);
	} else if (chosen(s, p->t, &p->at_t)) {
		if (r->gs == 0u) { /* the row's places, once */
			row_at(r, i, cols, rows, p->paired);
		}
		apply_at(p->w, r, j, s);
		p->cnt++;
	}
}

/* the first listed column from t on whose step is non-zero (nc if none):
 * the fused step in int32 (|v| < 2^27, the dither's top bits < 2^30), the
 * list's entries column | (x - x_zp) << 16; a loop apart, so that its few
 * values stay in registers */
static uint32_t next_step(const uint32_t *cl, uint32_t t, uint32_t nc, int32_t c, uint32_t di,
			  int dsh, int sh, int32_t *s)
{
	for (; t < nc; t++) {
		const uint32_t e = cl[t];
		const int32_t v = c * ((int32_t)e >> 16);
		const int32_t q = (v + (int32_t)((di + (e & 0xFFFFu) * KL_WEYL) >> dsh)) >> sh;
		if (q != 0) {
			*s = q;
			return t;
		}
	}
	return nc;
}

/* A pass over the non-zero gradients in index order, visiting the non-zero
 * steps. Fused dense: the rows with dy != 0 times the listed columns cl
 * (x != x_zp; fast: next_step's entries, else the column); kept gradients:
 * gw != 0, in int64. */
static void pass(struct topr_pass *p, const int32_t *gw, const int8_t *dy, const int8_t *x,
		 int32_t x_zp, const uint32_t *cl, uint32_t nc, int fast, int rows, int cols,
		 int32_t lr_q, int w_shift, uint32_t d0)
{
	struct topr_row r;
	if (gw != NULL) {
		const uint32_t n = (uint32_t)rows * (uint32_t)cols;
		uint32_t row = UINT32_MAX;
		for (uint32_t k = 0; k < n && p->cnt < p->limit; k++) {
			if (gw[k] != 0) {
				const int64_t v = kl_stochastic_shift((int64_t)gw[k] * lr_q, w_shift,
								      d0 + k * KL_WEYL);
				const uint32_t i = k / (uint32_t)cols;
				if (i != row) { /* a new row: its places when needed */
					r.gs = 0u;
					row = i;
				}
				if (v != 0) {
					visit(p, &r, (int)i, (int)(k - i * (uint32_t)cols), k,
					      (int32_t)(v > 127 ? 127 : (v < -128 ? -128 : v)), rows,
					      cols);
				}
			}
		}
		return;
	}
	for (int i = 0; i < rows && p->cnt < p->limit; i++) {
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c == 0) {
			continue;
		}
		r.gs = 0u;
		const uint32_t ki = (uint32_t)i * (uint32_t)cols;
		const uint32_t di = d0 + ki * KL_WEYL;
		if (fast) {
			int32_t s = 0;
			for (uint32_t t = 0; (t = next_step(cl, t, nc, c, di, 32 - w_shift, w_shift,
							    &s)) < nc;
			     t++) {
				const uint32_t j = cl[t] & 0xFFFFu;
				if (p->mode == LIST) { /* (visit's first case, inline) */
					list_one(p, ki + j, s > 127 ? 127 : (s < -128 ? -128 : s));
					continue;
				}
				visit(p, &r, i, (int)j, ki + j, s, rows, cols);
			}
			continue;
		}
		for (uint32_t t = 0; t < nc; t++) {
			const uint32_t j = cl[t];
			const int32_t v = c * ((int32_t)x[j] - x_zp);
			const int64_t s = kl_stochastic_shift(v, w_shift, di + j * KL_WEYL);
			if (s != 0) {
				visit(p, &r, i, (int)j, ki + j,
				      (int32_t)(s > 127 ? 127 : (s < -128 ? -128 : s)), rows, cols);
			}
		}
	}
}

uint32_t kl_topr_sgd_weights_s8(int8_t *w, const int32_t *gw, const int8_t *dy, const int8_t *x,
				int32_t x_zp, int rows, int cols, int32_t lr_q, int w_shift,
				uint32_t *dither, uint32_t k_sel, uint32_t *hist, int paired)
{
	const uint32_t d0 = *dither;
	const uint32_t n_w = (uint32_t)rows * (uint32_t)cols;
	*dither = d0 + n_w * KL_WEYL; /* over every weight */
	uint32_t *cl = hist + KL_TOPR_S8_BINS + KL_TOPR_S8_LIST, nc = 0;
	const int fast = w_shift >= 1 && w_shift <= 30 && cols <= 0x10000;
	if (gw == NULL) {
		for (int j = 0; j < cols; j++) {
			const int32_t xc = (int32_t)x[j] - x_zp;
			if (xc != 0) {
				cl[nc++] = fast ? (uint32_t)j | (uint32_t)xc << 16 : (uint32_t)j;
			}
		}
	}
	struct topr_pass p = {LIST, hist + KL_TOPR_S8_BINS, 0u, 0u, hist, w, UINT32_MAX,
			      gw == NULL && paired, 0, 0u};
	/* index and step in a word while the index fits 24 bits */
	p.kept = n_w < (1u << 24) ? KL_TOPR_S8_LIST : 0u;
	pass(&p, gw, dy, x, x_zp, cl, nc, fast, rows, cols, lr_q, w_shift, d0);
	const uint32_t cnt = p.cnt;
	if (cnt > k_sel && cnt <= p.kept) {
		hist_of_list(hist, p.out, cnt);
	}
	p.at_t = cnt > k_sel ? threshold(hist, k_sel, &p.t) : 0u;
	if (cnt <= p.kept) { /* all listed: applied from the list */
		const uint32_t *kept = p.out;
		uint32_t applied = 0, row = UINT32_MAX;
		struct topr_row r;
		for (uint32_t e = 0; e < cnt; e++) {
			const int32_t s = (int8_t)(kept[e] & 0xFFu);
			if (chosen(s, p.t, &p.at_t)) {
				const uint32_t k = kept[e] >> 8, i = k / (uint32_t)cols;
				if (i != row) { /* (the list is in index order: rows in turn) */
					row_at(&r, (int)i, cols, rows, p.paired);
					row = i;
				}
				apply_at(w, &r, (int)(k - i * (uint32_t)cols), s);
				applied++;
			}
		}
		return applied;
	}
	/* more than the list holds: a second pass applies the chosen ones, up
	 * to the last of them */
	p.mode = APPLY;
	p.cnt = 0u;
	p.limit = cnt < k_sel ? cnt : k_sel;
	pass(&p, gw, dy, x, x_zp, cl, nc, fast, rows, cols, lr_q, w_shift, d0);
	return p.cnt;
}
