/*
 * kl_bench_kernels: benchmark and self-test of the int8 kernels, ref vs dsp
 * (vs mve on an MVE core: dense forward, input and weight gradient, depthwise).
 *
 * For a table of layer shapes it fills inputs from a fixed PRNG, runs the ref
 * and (where the core has the DSP extension) the dsp kernels for the forward
 * pass, the input gradient and the weight gradient, times each call with
 * kl_port_insn() (retired instructions, exact to one timer tick under QEMU
 * -icount) and compares dsp with ref on every output element and on the
 * saturation flag. A second table of odd shapes (channels and im2col lengths
 * not multiples of four, padding, strides, ReLU6, zero points != 0, tiled
 * paths, requantisation outside the fast path) is checked the same way.
 *
 * Output, one line per measurement:
 *   KL kbench op <name> dir fwd|bwd|wgrad|sgd backend ref|dsp|dsp_plain|mve macs N insn N mismatches N
 * A dense layer's dsp kernels are those of the paired weight layout
 * (kl_fc_pair_s8), which the engine keeps for trained dense layers where
 * n_in % 4 == 0 on cores with DSP and without MVE: forward, input gradient
 * and the fused SGD step (dir sgd, "MACs" = weights updated), the results
 * unpaired and compared with ref's; dsp_plain is the plain-layout kernel
 * (frozen and paged layers); mve the Helium kernels on the plain layout.
 * then "KL kbench done dsp 0|1 mve 0|1 counter 0|1 mismatches N"; the exit
 * code is 1 if any dsp or mve result differs from ref (or the scratch guard
 * was overwritten).
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"
#include "kl_port.h"
#include "kl_test_out.h"
#include "kl_test_rand.h"

enum { FC, CONV, DW };

typedef struct {
	const char *name;
	int kind;
	int h, w, c, co, k, stride, pad;
	int32_t x_zp, y_zp;
	int act;
	int y_shift; /* output exponent minus accumulator exponent */
} layer_t;

static const layer_t bench_layers[] = {
	/* name        kind  h   w   c    co   k  s  pad x_zp  y_zp  act           ys */
	{"fc64x32", FC, 1, 1, 64, 32, 1, 1, 0, -128, -128, KL_ACT_RELU, 9},
	{"fc256x128", FC, 1, 1, 256, 128, 1, 1, 0, -128, 0, KL_ACT_NONE, 10},
	{"conv1x1", CONV, 16, 16, 16, 32, 1, 1, 0, -128, -128, KL_ACT_RELU, 8},
	{"conv3x3", CONV, 16, 16, 8, 16, 3, 1, 1, -128, -128, KL_ACT_RELU, 9},
	{"conv3x3s2", CONV, 16, 16, 8, 16, 3, 2, 1, -128, -128, KL_ACT_RELU, 9},
	{"dw3x3", DW, 16, 16, 32, 32, 3, 1, 1, -128, -128, KL_ACT_RELU6, 7},
	{"dw3x3s2", DW, 16, 16, 32, 32, 3, 2, 1, -128, -128, KL_ACT_RELU, 7},
};

static const layer_t edge_layers[] = {
	{"edge_fc37x11", FC, 1, 1, 37, 11, 1, 1, 0, 9, 3, KL_ACT_NONE, 6},
	{"edge_fc36x7", FC, 1, 1, 36, 7, 1, 1, 0, 5, 3, KL_ACT_NONE, 6},
	{"edge_fc24x9_relu6", FC, 1, 1, 24, 9, 1, 1, 0, -128, -128, KL_ACT_RELU6, 5},
	{"edge_fc40x10_zp", FC, 1, 1, 40, 10, 1, 1, 0, -128, 7, KL_ACT_RELU, 8},
	{"edge_fc264x5", FC, 1, 1, 264, 5, 1, 1, 0, -128, 0, KL_ACT_NONE, 10},
	{"edge_fc8x3_s1", FC, 1, 1, 8, 3, 1, 1, 0, 0, 0, KL_ACT_NONE, 1},
	{"edge_conv3x3_c3_co5", CONV, 7, 5, 3, 5, 3, 1, 1, -128, -128, KL_ACT_RELU6, 6},
	{"edge_conv1x1_c7_s2", CONV, 5, 5, 7, 3, 1, 2, 0, 17, 0, KL_ACT_NONE, 5},
	{"edge_conv1x1_c12_zp0", CONV, 3, 4, 12, 6, 1, 1, 0, 0, 0, KL_ACT_NONE, 4},
	{"edge_conv5x5_s2", CONV, 9, 7, 6, 9, 5, 2, 2, 0, 0, KL_ACT_NONE, 9},
	{"edge_conv3x3_valid", CONV, 6, 6, 1, 2, 3, 1, 0, -3, 5, KL_ACT_RELU, 3},
	{"edge_conv1x1_ktile", CONV, 3, 3, 300, 3, 1, 1, 0, -128, 0, KL_ACT_NONE, 12},
	{"edge_conv3x3_wttile", CONV, 4, 4, 40, 41, 3, 1, 1, 7, 0, KL_ACT_NONE, 12},
	{"edge_conv3x3_sat", CONV, 5, 5, 4, 4, 3, 1, 1, -128, 0, KL_ACT_NONE, 1},
	{"edge_conv3x3_shift0", CONV, 4, 4, 4, 5, 3, 1, 1, -128, -128, KL_ACT_RELU, 0},
	{"edge_conv3x3_shift24", CONV, 4, 4, 4, 5, 3, 1, 1, -128, 0, KL_ACT_NONE, 24},
	{"edge_dw3x3_c7_s2", DW, 9, 6, 7, 7, 3, 2, 1, -128, -128, KL_ACT_RELU6, 5},
	{"edge_dw3x3_c13", DW, 5, 5, 13, 13, 3, 1, 1, 5, 0, KL_ACT_NONE, 6},
	{"edge_dw5x5_c8", DW, 8, 8, 8, 8, 5, 1, 2, 0, 0, KL_ACT_NONE, 7},
	{"edge_dw3x3_valid_s2", DW, 7, 7, 4, 4, 3, 2, 0, -1, 0, KL_ACT_NONE, 1},
};

#define MAXB 40000 /* bytes of the largest int8 tensor */
#define MAXW 33000 /* elements of the largest weight / int32 tensor */
#define GUARD 64

static int8_t xs[MAXB], ws[MAXW], dys[MAXB], y_ref[MAXB];
static int32_t bs[1024];
static int32_t a_ref[MAXW], gw_ref[MAXW], gb_ref[1024];
static int8_t w_sgd_ref[MAXW];
static int32_t b_sgd_ref[1024];
#if KL_KERNELS_DSP
static int8_t y_dsp[MAXB];
static int8_t wp[MAXW], w_sgd_dsp[MAXW];
static int32_t b_sgd_dsp[1024];
static int32_t a_dsp[MAXW], gw_dsp[MAXW], gb_dsp[1024];
#endif
#if KL_KERNELS_MVE /* (the dsp buffers serve the mve kernels too) */
/* the mve variant of an op, if it has one: 1 if it ran (into y_dsp / a_dsp /
 * gw_dsp, gb_dsp), with *sat the forward's saturation flag */
static int mve_run(int kind, int dir, const kl_geom_t *g, int32_t x_zp, const kl_requant_t *rq,
		   void *s, int *sat)
{
	if (kind == FC) {
		if (dir == 0) {
			*sat = kl_mve_fully_connected_s8(xs, x_zp, ws, bs, rq, y_dsp, g->c, g->co, s);
		} else if (dir == 1) {
			kl_mve_fully_connected_backward_input_s8(ws, dys, a_dsp, g->c, g->co);
		} else {
			kl_mve_fully_connected_grad_s8(dys, xs, x_zp, gw_dsp, gb_dsp, g->c, g->co);
		}
		return 1;
	}
	if (kind == DW && dir == 0) {
		*sat = kl_mve_depthwise_conv_s8(g, xs, x_zp, ws, bs, rq, y_dsp, s);
		return 1;
	}
	if (kind == DW && dir == 1) {
		kl_mve_depthwise_conv_backward_input_s8(g, ws, dys, a_dsp, s);
		return 1;
	}
	if (kind == DW && dir == 2) {
		kl_mve_depthwise_conv_grad_s8(g, xs, x_zp, dys, gw_dsp, gb_dsp, s);
		return 1;
	}
	return 0;
}
#endif
static uint32_t scratch_mem[(MAXB + 4 * MAXW) / 4 + GUARD];

static uint32_t rng_state = 0x12345678u;
static uint32_t rnd(void)
{
	return kl_test_xorshift(&rng_state);
}

static void fill_s8(int8_t *p, long n, int lo, int hi)
{
	for (long i = 0; i < n; i++) {
		p[i] = (int8_t)(lo + (int)(rnd() % (uint32_t)(hi - lo + 1)));
	}
}

static void report(const char *op, const char *dir, const char *backend, long macs,
		   uint64_t insn, long mism)
{
	out_str("KL kbench op ");
	out_str(op);
	out_str(" dir ");
	out_str(dir);
	out_str(" backend ");
	out_str(backend);
	out_str(" macs ");
	out_int(macs);
	out_str(" insn ");
	out_int((int64_t)insn);
	out_str(" mismatches ");
	out_int(mism);
	out_str("\n");
}

#if KL_KERNELS_DSP || KL_KERNELS_MVE
#define KL_BENCH_UNUSED
#else /* ref only: the dsp buffers stay unused */
#define KL_BENCH_UNUSED __attribute__((unused))
#endif

static void *scratch_for(uint32_t bytes)
{
	uint8_t *s = (uint8_t *)scratch_mem;
	memset(s, 0xA5, bytes + GUARD);
	return s;
}

KL_BENCH_UNUSED static long guard_broken(uint32_t bytes)
{
	const uint8_t *s = (const uint8_t *)scratch_mem + bytes;
	long m = 0;
	for (int i = 0; i < GUARD; i++) {
		m += s[i] != 0xA5;
	}
	return m;
}

/* Fill a layer's tensors from the PRNG. */
static void fill(const layer_t *L, const kl_geom_t *g, long nx, long nw, long ny, int nb)
{
	(void)g;
	fill_s8(xs, nx, -128, 127);
	fill_s8(ws, nw, -127, 127);
	fill_s8(dys, ny, -128, 127);
	for (int i = 0; i < nb; i++) {
		bs[i] = (int32_t)(rnd() % 65536u) - 32768;
	}
	/* a few zero gradients, as after ReLU masking */
	for (long i = 0; i < ny; i += 7) {
		dys[i] = 0;
	}
	(void)L;
}

static uint64_t t0;
static void tic(void)
{
	t0 = kl_port_insn();
}
static uint64_t toc(void)
{
	return kl_port_insn() - t0;
}

#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
#include "arm_nnfunctions.h"
static int8_t y_cmsis[MAXB];
static int32_t raw_bias[1024], raw_mult[1024], raw_shift[1024];
static int32_t prep_mem[KL_CMSIS_PREP_HEADER + 3 * 1024];

/* calls per timed region for the backend-vs-raw comparison: small layers
 * repeated, so that one timer tick (40 instructions) is a small part of
 * the difference; the count reported is per call */
static int cmsis_reps(long macs)
{
	return macs < 65536 ? 16 : 1;
}

/* The same layer through CMSIS-NN directly (backend cmsis_raw): the function
 * the cmsis_nn backend calls, with every parameter (bias at the accumulator's
 * scale, per-channel multipliers and shifts, dims, its buffer) prepared
 * before the timer starts; only the call is timed. The outputs are compared
 * with ref's; the baseline of the backend's overhead. reps: calls timed
 * together (the count returned is per call). */
/* the backend's forward kernel of layer L (prep NULL: without a block) */
static int cmsis_call(const layer_t *L, const kl_geom_t *g, const kl_requant_t *rq, void *s,
		      int32_t *prep, int changed)
{
	if (prep == NULL) {
		return L->kind == FC ? kl_cmsis_fully_connected_s8(xs, L->x_zp, ws, bs, rq, y_cmsis,
								    g->c, g->co, s)
		       : L->kind == CONV
			       ? kl_cmsis_conv_s8(g, xs, L->x_zp, ws, bs, rq, y_cmsis, s)
			       : kl_cmsis_depthwise_conv_s8(g, xs, L->x_zp, ws, bs, rq, y_cmsis, s);
	}
	if (L->kind == FC) {
		return kl_cmsis_fully_connected_prep_s8(xs, L->x_zp, ws, bs, rq, y_cmsis, g->c,
							g->co, s, prep, changed);
	}
	if (L->kind == CONV) {
		return kl_cmsis_conv_prep_s8(g, xs, L->x_zp, ws, bs, rq, y_cmsis, s, prep, changed);
	}
	return kl_cmsis_depthwise_conv_prep_s8(g, xs, L->x_zp, ws, bs, rq, y_cmsis, s, prep,
					       changed);
}

static uint64_t run_raw(const layer_t *L, const kl_geom_t *g, const kl_requant_t *rq, void *buf,
			int32_t buf_bytes, int reps)
{
	for (int i = 0; i < g->co; i++) {
		raw_bias[i] = kl_rshift_round(bs[i], rq->b_shift);
		raw_mult[i] = (int32_t)1 << 30;
		raw_shift[i] = 1 - rq->y_shift;
	}
	const cmsis_nn_context ctx = {buf, buf_bytes};
	const cmsis_nn_activation act = {rq->lo + rq->zp, rq->hi + rq->zp};
	const cmsis_nn_dims in = {1, g->h, g->w, g->c}, out = {1, g->ho, g->wo, g->co};
	const cmsis_nn_dims bd = {1, 1, 1, g->co};
	const cmsis_nn_tile stride = {g->stride, g->stride}, pad = {g->pad_l, g->pad_t};
	const cmsis_nn_tile dil = {1, 1};
	const cmsis_nn_per_channel_quant_params qc = {raw_mult, raw_shift};
	uint64_t ti;
	if (L->kind == FC) {
		const cmsis_nn_fc_params fc = {-L->x_zp, 0, rq->zp, act};
		const cmsis_nn_per_tensor_quant_params qt = {(int32_t)1 << 30, 1 - rq->y_shift};
		const cmsis_nn_dims fin = {1, 1, 1, g->c}, fw = {g->c, 1, 1, g->co};
		const cmsis_nn_dims fo = {1, 1, 1, g->co};
		const cmsis_nn_context none = {NULL, 0};
		tic();
		for (int r = 0; r < reps; r++) {
			(void)arm_fully_connected_s8(&none, &fc, &qt, &fin, xs, &fw, ws, &bd,
						     raw_bias, &fo, y_cmsis);
		}
		ti = toc();
	} else if (L->kind == CONV) {
		const cmsis_nn_conv_params cp = {-L->x_zp, rq->zp, stride, pad, dil, act};
		const cmsis_nn_dims f = {g->co, g->kh, g->kw, g->c};
		tic();
		for (int r = 0; r < reps; r++) {
			(void)arm_convolve_wrapper_s8(&ctx, &cp, &qc, &in, xs, &f, ws, &bd,
						      raw_bias, &out, y_cmsis);
		}
		ti = toc();
	} else {
		const cmsis_nn_dw_conv_params dp = {-L->x_zp, rq->zp, 1, stride, pad, dil, act};
		const cmsis_nn_dims f = {1, g->kh, g->kw, g->c};
		tic();
		for (int r = 0; r < reps; r++) {
			(void)arm_depthwise_conv_wrapper_s8(&ctx, &dp, &qc, &in, xs, &f, ws, &bd,
							    raw_bias, &out, y_cmsis);
		}
		ti = toc();
	}
	return ti / (uint64_t)reps;
}
#endif

/* the fused dense SGD step: ref on the plain weights, dsp on the paired ones
 * (or the plain dsp kernel where the layer is not paired), compared weight
 * by weight after unpairing, with the biases and the dither */
static long run_sgd(const layer_t *L, int n_in, int n_out, int paired, int w_shift, int print)
{
	const long nw = (long)n_in * n_out;
	const int32_t lr_q = 205; /* 0.05 with 12 fraction bits */
	const int b_shift = 6;
	memcpy(w_sgd_ref, ws, (size_t)nw);
	memcpy(b_sgd_ref, bs, (size_t)n_out * 4u);
	uint32_t d_ref = 0x2468ACE1u;
	void *s = scratch_for(KL_FC_SGD_S8_SCRATCH(n_in, n_out));
	tic();
	kl_ref_fully_connected_sgd_s8(w_sgd_ref, b_sgd_ref, dys, xs, L->x_zp, lr_q, w_shift, b_shift,
				      &d_ref, n_in, n_out, s);
	uint64_t ti = toc();
	if (print) {
		report(L->name, "sgd", "ref", nw, ti, 0);
	}
	long m = 0;
#if KL_KERNELS_DSP
	uint32_t d_dsp = 0x2468ACE1u;
	memcpy(b_sgd_dsp, bs, (size_t)n_out * 4u);
	s = scratch_for(KL_FC_SGD_S8_SCRATCH(n_in, n_out));
	if (paired) {
		kl_fc_pair_s8(ws, w_sgd_dsp, n_in, n_out);
		tic();
		kl_dsp_fully_connected_sgd_paired_s8(w_sgd_dsp, b_sgd_dsp, dys, xs, L->x_zp, lr_q,
						     w_shift, b_shift, &d_dsp, n_in, n_out, s);
		ti = toc();
		kl_fc_unpair_s8(w_sgd_dsp, wp, n_in, n_out);
		memcpy(w_sgd_dsp, wp, (size_t)nw);
	} else {
		memcpy(w_sgd_dsp, ws, (size_t)nw);
		tic();
		kl_dsp_fully_connected_sgd_s8(w_sgd_dsp, b_sgd_dsp, dys, xs, L->x_zp, lr_q, w_shift,
					      b_shift, &d_dsp, n_in, n_out, s);
		ti = toc();
	}
	m = kl_test_diff_s8(w_sgd_ref, w_sgd_dsp, nw) + kl_test_diff_s32(b_sgd_ref, b_sgd_dsp, n_out) +
	    (d_ref != d_dsp) + guard_broken(KL_FC_SGD_S8_SCRATCH(n_in, n_out));
	if (print || m != 0) {
		report(L->name, "sgd", "dsp", nw, ti, m);
	}
	if (paired) { /* the plain-layout kernel too, for comparison */
		memcpy(w_sgd_dsp, ws, (size_t)nw);
		memcpy(b_sgd_dsp, bs, (size_t)n_out * 4u);
		d_dsp = 0x2468ACE1u;
		s = scratch_for(KL_FC_S8_SCRATCH(n_in, n_out));
		tic();
		kl_dsp_fully_connected_sgd_s8(w_sgd_dsp, b_sgd_dsp, dys, xs, L->x_zp, lr_q, w_shift,
					      b_shift, &d_dsp, n_in, n_out, s);
		ti = toc();
		const long mp = kl_test_diff_s8(w_sgd_ref, w_sgd_dsp, nw) +
				kl_test_diff_s32(b_sgd_ref, b_sgd_dsp, n_out) + (d_ref != d_dsp);
		m += mp;
		if (print || mp != 0) {
			report(L->name, "sgd", "dsp_plain", nw, ti, mp);
		}
	}
#if KL_KERNELS_MVE
	{ /* the Helium kernel on the plain layout (what the engine runs on MVE cores) */
		uint32_t d_mve = 0x2468ACE1u;
		memcpy(w_sgd_dsp, ws, (size_t)nw);
		memcpy(b_sgd_dsp, bs, (size_t)n_out * 4u);
		s = scratch_for(KL_FC_S8_SCRATCH(n_in, n_out));
		tic();
		kl_mve_fully_connected_sgd_s8(w_sgd_dsp, b_sgd_dsp, dys, xs, L->x_zp, lr_q, w_shift,
					      b_shift, &d_mve, n_in, n_out, s);
		ti = toc();
		const long mv = kl_test_diff_s8(w_sgd_ref, w_sgd_dsp, nw) +
				kl_test_diff_s32(b_sgd_ref, b_sgd_dsp, n_out) + (d_ref != d_mve) +
				guard_broken(KL_FC_S8_SCRATCH(n_in, n_out));
		m += mv;
		if (print || mv != 0) {
			report(L->name, "sgd", "mve", nw, ti, mv);
		}
	}
#endif
	if (paired) { /* back to the plain weights for the next kernels */
		kl_fc_pair_s8(ws, wp, n_in, n_out);
	}
#else
	(void)paired;
#endif
	return m;
}

static long run_layer(const layer_t *L, int print)
{
	kl_geom_t g;
	memset(&g, 0, sizeof g);
	g.h = L->h;
	g.w = L->w;
	g.c = L->c;
	g.co = L->kind == DW ? L->c : L->co;
	g.kh = g.kw = L->k;
	g.stride = L->stride;
	g.pad_t = g.pad_l = L->pad;
	g.ho = (L->h + 2 * L->pad - L->k) / L->stride + 1;
	g.wo = (L->w + 2 * L->pad - L->k) / L->stride + 1;
	const long nx = (long)g.h * g.w * g.c;
	const long ny = (long)g.ho * g.wo * g.co;
	const long nw = L->kind == DW ? (long)g.kh * g.kw * g.c : (long)g.co * g.kh * g.kw * g.c;
	const long macs = L->kind == DW ? ny * g.kh * g.kw : ny * g.kh * g.kw * g.c;
	const int nb = g.co;
	fill(L, &g, nx, nw, ny, nb);
	kl_requant_t rq;
	/* accumulator exponent -12, bias exponent -20, output -12 + y_shift */
	kl_requant_init(&rq, -12, -20, -12 + L->y_shift, L->y_zp, L->act);
	const uint32_t sbytes = L->kind == FC ? KL_FC_S8_SCRATCH(g.c, g.co) : KL_CONV_S8_SCRATCH(&g);
	const char *nm = L->name;
	/* a dense layer the engine would keep paired */
	const int paired = L->kind == FC && (g.c & 3) == 0 && g.co >= 2;
	(void)paired;
	long bad = 0;
	uint64_t ti;
	int sr, sd;
	long m;
	(void)sd;
	(void)m;
	/* ---- forward ---- */
	void *s = scratch_for(sbytes);
	tic();
	if (L->kind == FC) {
		sr = kl_ref_fully_connected_s8(xs, L->x_zp, ws, bs, &rq, y_ref, g.c, g.co, s);
	} else if (L->kind == CONV) {
		sr = kl_ref_conv_s8(&g, xs, L->x_zp, ws, bs, &rq, y_ref, s);
	} else {
		sr = kl_ref_depthwise_conv_s8(&g, xs, L->x_zp, ws, bs, &rq, y_ref, s);
	}
	ti = toc();
	if (print) {
		report(nm, "fwd", "ref", macs, ti, 0);
	}
#if KL_KERNELS_DSP
	memset(y_dsp, 0x55, (size_t)ny);
	s = scratch_for(sbytes);
	tic();
	if (L->kind == FC) {
		sd = kl_dsp_fully_connected_s8(xs, L->x_zp, ws, bs, &rq, y_dsp, g.c, g.co, s);
	} else if (L->kind == CONV) {
		sd = kl_dsp_conv_s8(&g, xs, L->x_zp, ws, bs, &rq, y_dsp, s);
	} else {
		sd = kl_dsp_depthwise_conv_s8(&g, xs, L->x_zp, ws, bs, &rq, y_dsp, s);
	}
	ti = toc();
	m = kl_test_diff_s8(y_ref, y_dsp, ny) + (sr != sd) + guard_broken(sbytes);
	bad += m;
	report(nm, "fwd", L->kind == FC && paired ? "dsp_plain" : "dsp",
	       macs, ti, m);
	if (L->kind == FC && paired) { /* the paired layout: what a trained layer runs */
		kl_fc_pair_s8(ws, wp, g.c, g.co);
		memset(y_dsp, 0x55, (size_t)ny);
		s = scratch_for(sbytes);
		tic();
		sd = kl_dsp_fully_connected_paired_s8(xs, L->x_zp, wp, bs, &rq, y_dsp, g.c, g.co, s);
		ti = toc();
		m = kl_test_diff_s8(y_ref, y_dsp, ny) + (sr != sd) + guard_broken(sbytes);
		bad += m;
		report(nm, "fwd", "dsp", macs, ti, m);
	}
#endif
#if KL_KERNELS_MVE
	memset(y_dsp, 0x55, (size_t)ny);
	s = scratch_for(sbytes);
	tic();
	if (mve_run(L->kind, 0, &g, L->x_zp, &rq, s, &sd)) {
		ti = toc();
		m = kl_test_diff_s8(y_ref, y_dsp, ny) + (sr != sd) + guard_broken(sbytes);
		bad += m;
		report(nm, "fwd", "mve", macs, ti, m);
	}
#endif
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
	/* the CMSIS-NN backend's forward kernels, checked against ref: without a
	 * parameter block (its scratch holds one), then as the engine calls them,
	 * on the layer's block (kl_model_init's): made by a first call, then
	 * timed as a frozen layer (cmsis_nn: the block holds the biases) and as
	 * a trained one (cmsis_nn_train: the bias rescaled in every call) */
	int sc;
	long mc = 0;
	const int kc = L->kind == FC ? KL_CMSIS_FC : L->kind == CONV ? KL_CMSIS_CONV : KL_CMSIS_DW;
	for (int pass = 0; pass < 4; pass++) {
		memset(y_cmsis, 0x55, (size_t)ny);
		s = scratch_for(sbytes);
		if (pass == 1) {
			kl_cmsis_prep_init(prep_mem, kc, &g);
		}
		const int changed = pass != 2;
		const int reps = pass >= 2 ? cmsis_reps(macs) : 1;
		tic();
		for (int r = 0; r < reps; r++) {
			sc = cmsis_call(L, &g, &rq, s, pass == 0 ? NULL : prep_mem, changed);
		}
		ti = toc() / (uint64_t)reps;
		m = kl_test_diff_s8(y_ref, y_cmsis, ny) + (sr != sc) + guard_broken(sbytes);
		bad += m;
		mc += m;
		if (pass == 2) {
			report(nm, "fwd", "cmsis_nn", macs, ti, mc);
		} else if (pass == 3) {
			report(nm, "fwd", "cmsis_nn_train", macs, ti, m);
		}
	}
#if defined(ARM_MATH_MVEI) /* (Helium: the backend's dense layers run the mve kernel) */
	const int raw_fc = 0;
#else
	const int raw_fc = 1;
#endif
	/* (else the backend runs the default kernels) */
	if (rq.y_shift >= 1 && rq.y_shift <= 31 && (L->kind != FC || raw_fc)) {
		memset(y_cmsis, 0x55, (size_t)ny);
		s = scratch_for(sbytes);
		const uint32_t nbuf = L->kind == FC	    ? 0u
				      : L->kind == CONV ? kl_cmsis_conv_s8_buffer(&g)
							: kl_cmsis_depthwise_conv_s8_buffer(&g);
		ti = run_raw(L, &g, &rq, s, (int32_t)nbuf, cmsis_reps(macs));
		m = kl_test_diff_s8(y_ref, y_cmsis, ny) + guard_broken(sbytes);
		bad += m;
		report(nm, "fwd", "cmsis_raw", macs, ti, m);
	}
#endif
	(void)sr;
	/* ---- input gradient ---- */
	s = scratch_for(sbytes);
	tic();
	if (L->kind == FC) {
		kl_ref_fully_connected_backward_input_s8(ws, dys, a_ref, g.c, g.co);
	} else if (L->kind == CONV) {
		kl_ref_conv_backward_input_s8(&g, ws, dys, a_ref, s);
	} else {
		kl_ref_depthwise_conv_backward_input_s8(&g, ws, dys, a_ref, s);
	}
	ti = toc();
	if (print) {
		report(nm, "bwd", "ref", macs, ti, 0);
	}
#if KL_KERNELS_DSP
	{
		memset(a_dsp, 0x55, (size_t)nx * 4u);
		s = scratch_for(sbytes);
		tic();
		if (L->kind == FC && paired) {
			kl_dsp_fully_connected_backward_input_paired_s8(wp, dys, a_dsp, g.c, g.co);
		} else if (L->kind == FC) {
			kl_dsp_fully_connected_backward_input_s8(ws, dys, a_dsp, g.c, g.co);
		} else if (L->kind == CONV) {
			kl_dsp_conv_backward_input_s8(&g, ws, dys, a_dsp, s);
		} else {
			kl_dsp_depthwise_conv_backward_input_s8(&g, ws, dys, a_dsp, s);
		}
		ti = toc();
		m = kl_test_diff_s32(a_ref, a_dsp, nx) + guard_broken(sbytes);
		bad += m;
		report(nm, "bwd", "dsp", macs, ti, m);
	}
#endif
#if KL_KERNELS_MVE
	memset(a_dsp, 0x55, (size_t)nx * 4u);
	s = scratch_for(sbytes);
	tic();
	if (mve_run(L->kind, 1, &g, L->x_zp, &rq, s, &sd)) {
		ti = toc();
		m = kl_test_diff_s32(a_ref, a_dsp, nx) + guard_broken(sbytes);
		bad += m;
		report(nm, "bwd", "mve", macs, ti, m);
	}
#endif
	/* ---- weight gradient ---- */
	s = scratch_for(sbytes);
	tic();
	if (L->kind == FC) {
		kl_ref_fully_connected_grad_s8(dys, xs, L->x_zp, gw_ref, gb_ref, g.c, g.co);
	} else if (L->kind == CONV) {
		kl_ref_conv_grad_s8(&g, xs, L->x_zp, dys, gw_ref, gb_ref, s);
	} else {
		kl_ref_depthwise_conv_grad_s8(&g, xs, L->x_zp, dys, gw_ref, gb_ref, s);
	}
	ti = toc();
	if (print) {
		report(nm, "wgrad", "ref", macs, ti, 0);
	}
#if KL_KERNELS_DSP
	if (L->kind != FC) {
		memset(gw_dsp, 0x55, (size_t)nw * 4u);
		memset(gb_dsp, 0x55, (size_t)nb * 4u);
		s = scratch_for(sbytes);
		tic();
		if (L->kind == CONV) {
			kl_dsp_conv_grad_s8(&g, xs, L->x_zp, dys, gw_dsp, gb_dsp, s);
		} else {
			kl_dsp_depthwise_conv_grad_s8(&g, xs, L->x_zp, dys, gw_dsp, gb_dsp, s);
		}
		ti = toc();
		m = kl_test_diff_s32(gw_ref, gw_dsp, nw) + kl_test_diff_s32(gb_ref, gb_dsp, nb) +
		    guard_broken(sbytes);
		bad += m;
		report(nm, "wgrad", "dsp", macs, ti, m);
	}
#endif
#if KL_KERNELS_MVE
	memset(gw_dsp, 0x55, (size_t)nw * 4u);
	memset(gb_dsp, 0x55, (size_t)nb * 4u);
	s = scratch_for(sbytes);
	tic();
	if (mve_run(L->kind, 2, &g, L->x_zp, &rq, s, &sd)) {
		ti = toc();
		m = kl_test_diff_s32(gw_ref, gw_dsp, nw) + kl_test_diff_s32(gb_ref, gb_dsp, nb) +
		    guard_broken(sbytes);
		bad += m;
		report(nm, "wgrad", "mve", macs, ti, m);
	}
#endif
	if (L->kind == FC) {
		bad += run_sgd(L, g.c, g.co, paired, 16, print);
		bad += run_sgd(L, g.c, g.co, paired, 9, 0); /* the general path */
	}
	return bad;
}

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return 2;
	}
	long bad = 0;
	for (unsigned i = 0; i < sizeof bench_layers / sizeof bench_layers[0]; i++) {
		bad += run_layer(&bench_layers[i], 1);
	}
	for (unsigned i = 0; i < sizeof edge_layers / sizeof edge_layers[0]; i++) {
		bad += run_layer(&edge_layers[i], 1);
	}
	out_str("KL kbench done dsp ");
	out_int(KL_KERNELS_DSP);
	out_str(" mve ");
	out_int(KL_KERNELS_MVE);
	out_str(" counter ");
	out_int(kl_port_has_counter());
	out_str(" mismatches ");
	out_int(bad);
	out_str("\n");
	return bad != 0;
}
