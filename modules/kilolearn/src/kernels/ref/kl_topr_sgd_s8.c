/* Top-r SGD update, int8 (Kwon & Park, selective updates by gradient delta):
 * of a layer's weight steps only the k largest in magnitude are applied.
 * The threshold comes from one histogram pass over |step| (a step is an int8
 * value, so |step| <= 128 and the histogram is exact): no sort, no copy of
 * the steps. Ties at the threshold go to the lower index.
 *
 * Only a non-zero gradient makes a non-zero step (the dither alone stays
 * below one step) and a zero step is never chosen, so only the non-zero
 * gradients are visited, each weight's dither taken from its index (d +
 * index * W, the Weyl sequence the full update runs through).
 *
 * Fused dense layers (fused()): the rows with dy != 0 times a list of the
 * columns with x != x_zp, built once per call. The fraction rarely binds
 * (most int8 steps are zero), so one pass applies every non-zero step as it
 * is found and lists it with the byte it replaced; if more than k_sel turn
 * out non-zero, the listed ones not chosen get their bytes back. Past a full
 * list the steps are only counted, and a second pass from there applies the
 * chosen ones. The weights may be in the dsp backend's paired layout
 * (kl_fc_pair_s8), so that the forward and input-gradient kernels stay the
 * paired ones.
 *
 * Kept gradients (gw != 0), and fused steps beyond int32 (pass()): one pass
 * lists the non-zero steps (index and step in a word); when they fit the
 * list, the threshold and the update come from it, else a second pass
 * applies the chosen ones and ends at the last of them.
 *
 * Scratch (hist): KL_TOPR_S8_BINS words of histogram, KL_TOPR_S8_LIST words
 * of listed steps, then (fused dense) two words per input column. */
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

static inline void row_at(struct topr_row *r, int i, int cols, int rows, int paired)
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

/* weight j of the row: its offset in the layer's weights */
static inline uint32_t at(const struct topr_row *r, uint32_t j)
{
	return r->base + r->gs * (j >> 2) + r->o4[j & 3u];
}

/* one weight's update in place: the stored byte o (the paired layout's
 * flip undone and redone), its step s */
static inline int8_t stepped(int8_t o, uint8_t flip, int32_t s)
{
	return (int8_t)((uint8_t)sub_clamp((int8_t)((uint8_t)o ^ flip), s) ^ flip);
}

static inline void apply_at(int8_t *w, const struct topr_row *r, int j, int32_t s)
{
	w[at(r, (uint32_t)j)] = stepped(w[at(r, (uint32_t)j)], r->flip, s);
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

/* A pass over the non-zero gradients in index order, visiting the non-zero
 * steps (in int64): kept gradients gw != 0; fused dense (where fused() does
 * not take it): the rows with dy != 0 times the listed columns cl (x != x_zp). */
static void pass(struct topr_pass *p, const int32_t *gw, const int8_t *dy, const int8_t *x,
		 int32_t x_zp, const uint32_t *cl, uint32_t nc, int rows, int cols, int32_t lr_q,
		 int w_shift, uint32_t d0)
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

/* the first column pair from cp on whose step is non-zero (ce if none), the
 * step in *q: (c (x - x_zp) + dither's top sh bits) >> sh in int32 (|v| <
 * 2^27, the dither's top bits < 2^30). A loop apart, two columns a turn, so
 * that its few values stay in registers. */
static const uint32_t *next_step(const uint32_t *cp, const uint32_t *ce, int32_t c, uint32_t di,
				 int dsh, int sh, int32_t *q)
{
	const uint32_t *const ce4 = cp + ((ce - cp) & ~(ptrdiff_t)3);
	for (; cp != ce4; cp += 4) {
		const int32_t a = (c * (int32_t)cp[1] + (int32_t)((di + cp[0]) >> dsh)) >> sh;
		const int32_t b = (c * (int32_t)cp[3] + (int32_t)((di + cp[2]) >> dsh)) >> sh;
		if ((a | b) != 0) {
			*q = a != 0 ? a : b;
			return a != 0 ? cp : cp + 2;
		}
	}
	if (cp != ce) {
		const int32_t a = (c * (int32_t)cp[1] + (int32_t)((di + cp[0]) >> dsh)) >> sh;
		if (a != 0) {
			*q = a;
			return cp;
		}
	}
	return ce;
}

/* the state of fused()'s first pass a non-zero step needs */
struct fz {
	int8_t *w;         /* the row's first weight (base) */
	const uint8_t *o4; /* the row's places: w + gs (j >> 2) + o4[j & 3] */
	uint32_t gs, ki, i, cnt; /* ki: the row's first index; cnt: non-zero steps seen */
	uint32_t *hist;          /* NULL: the fraction cannot bind (no histogram, no list) */
	uint32_t *list, n, cap;  /* clamped steps: (index << 8 | step, the byte replaced) */
	uint32_t ri, rt;         /* stopped: from row ri, column pair rt on only counted */
	uint8_t flip, stopped;
};

/* a non-zero step q of column pair t (cp: column j = cp[0] / W) in the first
 * pass: applied, and where the fraction may bind counted in the histogram; a
 * step that clamps the weight is listed with the byte it replaced (it cannot
 * be undone by adding q back); once the list is full, such a step stops the
 * applying: from there on steps are only counted (a function apart: the
 * column loop keeps its registers) */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void on_step(struct fz *z, const uint32_t *cp, uint32_t t, int32_t q)
{
	q = q > 127 ? 127 : (q < -128 ? -128 : q);
	z->cnt++;
	if (z->hist != NULL) {
		z->hist[q < 0 ? -q : q]++;
	}
	if (z->stopped) {
		return;
	}
	const uint32_t j = cp[0] * KL_WEYL_INV;
	int8_t *const pw = z->w + z->gs * (j >> 2) + z->o4[j & 3u];
	const int32_t r = (int32_t)(int8_t)((uint8_t)*pw ^ z->flip) - q;
	if ((r > 127 || r < -127) && z->hist != NULL) {
		if (z->n == z->cap) {
			z->stopped = 1u;
			z->ri = z->i;
			z->rt = t;
			return;
		}
		z->list[2u * z->n] = (z->ki + j) << 8 | (uint8_t)q;
		z->list[2u * z->n + 1u] = (uint8_t)*pw;
		z->n++;
	}
	*pw = (int8_t)((uint8_t)(r > 127 ? 127 : (r < -127 ? -127 : r)) ^ z->flip);
}

/* The fused dense update. The rows with dy != 0 times the columns with x !=
 * x_zp (as word pairs j W, x - x_zp) bound the non-zero steps; where that is
 * at most k_sel every non-zero step is applied in one pass. Otherwise the
 * pass applies them too and counts |step|; the fraction seldom binds (most
 * int8 steps are zero), and when it does a second pass undoes the steps not
 * chosen: q added back, or the listed byte where the step clamped the
 * weight. Past a full list (more clamped steps than it holds) the first pass
 * only counts, and the second applies the chosen ones from there on. */
static uint32_t fused(int8_t *w, const int8_t *dy, const int8_t *x, int32_t x_zp, int rows,
		      int cols, int32_t lr_q, int sh, uint32_t d0, uint32_t k_sel, uint32_t *hist,
		      int paired)
{
	uint32_t *const list = hist + KL_TOPR_S8_BINS;
	uint32_t *const cw = list + KL_TOPR_S8_LIST;
	uint32_t nc = 0, jw = 0, nr = 0;
	for (int j = 0; j < cols; j++, jw += KL_WEYL) {
		const int32_t xc = (int32_t)x[j] - x_zp;
		if (xc != 0) {
			cw[2u * nc] = jw;
			cw[2u * nc + 1u] = (uint32_t)xc;
			nc++;
		}
	}
	for (int i = 0; i < rows; i++) {
		nr += dy[i] != 0;
	}
	if (nc == 0u || nr == 0u || lr_q == 0) {
		return 0u;
	}
	const int dsh = 32 - sh;
	const uint32_t *const ce = cw + 2u * nc;
	struct fz z;
	z.cnt = z.n = z.ri = z.rt = 0u;
	z.stopped = 0u;
	z.cap = KL_TOPR_S8_LIST / 2u;
	z.list = list;
	z.hist = nr * nc > k_sel ? hist : NULL; /* (nr nc <= rows cols, a weight count) */
	for (int v = 0; z.hist != NULL && v < KL_TOPR_S8_BINS; v++) {
		hist[v] = 0;
	}
	for (int i = 0; i < rows; i++) {
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c == 0) {
			continue;
		}
		struct topr_row r;
		row_at(&r, i, cols, rows, paired);
		z.w = w + r.base;
		z.o4 = r.o4;
		z.gs = r.gs;
		z.flip = r.flip;
		z.i = (uint32_t)i;
		z.ki = (uint32_t)i * (uint32_t)cols;
		const uint32_t di = d0 + z.ki * KL_WEYL;
		int32_t q;
		for (const uint32_t *cp = cw; (cp = next_step(cp, ce, c, di, dsh, sh, &q)) != ce;
		     cp += 2) {
			on_step(&z, cp, (uint32_t)(cp - cw) / 2u, q);
		}
	}
	const uint32_t cnt = z.cnt;
	if (cnt <= k_sel && !z.stopped) {
		return cnt; /* all applied */
	}
	/* the second pass, in index order: undo the steps not chosen (binding),
	 * apply the chosen ones past the stop */
	int t = 0;
	uint32_t at_t = 0, e = 0;
	if (cnt > k_sel) {
		at_t = threshold(hist, k_sel, &t);
	}
	for (int i = 0; i < rows; i++) {
		const int32_t c = (int32_t)dy[i] * lr_q;
		if (c == 0) {
			continue;
		}
		struct topr_row r;
		row_at(&r, i, cols, rows, paired);
		const uint32_t ki = (uint32_t)i * (uint32_t)cols;
		const uint32_t di = d0 + ki * KL_WEYL;
		for (uint32_t u = 0; u < nc; u++) {
			int32_t q = (c * (int32_t)cw[2u * u + 1u] + (int32_t)((di + cw[2u * u]) >> dsh)) >> sh;
			if (q == 0) {
				continue;
			}
			q = q > 127 ? 127 : (q < -128 ? -128 : q);
			const int take = chosen(q, t, &at_t);
			const uint32_t j = cw[2u * u] * KL_WEYL_INV;
			int8_t *const pw = w + at(&r, j);
			const int applied = !z.stopped || (uint32_t)i < z.ri ||
					    ((uint32_t)i == z.ri && u < z.rt);
			if (applied && !take) { /* undo */
				if (e < z.n && list[2u * e] >> 8 == ki + j) {
					*pw = (int8_t)list[2u * e + 1u];
					e++;
				} else {
					*pw = (int8_t)((uint8_t)((int8_t)((uint8_t)*pw ^ r.flip) + q) ^
						       r.flip);
				}
			} else if (applied) {
				e += e < z.n && list[2u * e] >> 8 == ki + j;
			} else if (take) {
				*pw = stepped(*pw, r.flip, q);
			}
		}
	}
	return cnt > k_sel ? k_sel : cnt;
}

uint32_t kl_topr_sgd_weights_s8(int8_t *w, const int32_t *gw, const int8_t *dy, const int8_t *x,
				int32_t x_zp, int rows, int cols, int32_t lr_q, int w_shift,
				uint32_t *dither, uint32_t k_sel, uint32_t *hist, int paired)
{
	const uint32_t d0 = *dither;
	const uint32_t n_w = (uint32_t)rows * (uint32_t)cols;
	*dither = d0 + n_w * KL_WEYL; /* over every weight */
	if (gw == NULL && w_shift >= 1 && w_shift <= 30 && n_w < (1u << 24)) { /* (index << 8) */
		return fused(w, dy, x, x_zp, rows, cols, lr_q, w_shift, d0, k_sel, hist, paired);
	}
	uint32_t *cl = hist + KL_TOPR_S8_BINS + KL_TOPR_S8_LIST, nc = 0;
	if (gw == NULL) {
		for (int j = 0; j < cols; j++) {
			if (x[j] != x_zp) {
				cl[nc++] = (uint32_t)j;
			}
		}
	}
	struct topr_pass p = {LIST, hist + KL_TOPR_S8_BINS, 0u, 0u, hist, w, UINT32_MAX,
			      gw == NULL && paired, 0, 0u};
	/* index and step in a word while the index fits 24 bits */
	p.kept = n_w < (1u << 24) ? KL_TOPR_S8_LIST : 0u;
	pass(&p, gw, dy, x, x_zp, cl, nc, rows, cols, lr_q, w_shift, d0);
	const uint32_t cnt = p.cnt;
	if (cnt > k_sel && cnt <= p.kept) {
		hist_of_list(hist, p.out, cnt);
	}
	p.at_t = cnt > k_sel ? threshold(hist, k_sel, &p.t) : 0u;
	if (cnt <= p.kept) { /* all listed: applied from the list */
		const uint32_t *kept = p.out;
		uint32_t applied = 0, row = UINT32_MAX;
		struct topr_row r = {0u, 0u, plain4, 0u};
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
	pass(&p, gw, dy, x, x_zp, cl, nc, rows, cols, lr_q, w_shift, d0);
	return p.cnt;
}
