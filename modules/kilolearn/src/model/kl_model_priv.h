/* The model engine's parts, by concern (one file each):
 *   kl_model_init.c  layout in the arena from a checked blob
 *   kl_forward.c     forward pass (through the op table)
 *   kl_backward.c    loss, masks, input gradients, weight gradients (op table)
 *   kl_update.c      update policies and the SGD steps that apply them
 *   kl_paged.c       paged dense ops: weights in the store, updated rows to
 *                    the weight log (kl_wlog), folds
 *   kl_train.c       the schedule executor and the public step calls
 *   kl_ops.c         the op table: each op kind's forward, input-gradient and
 *                    weight-gradient entry points, per dtype (TFLite Micro's
 *                    registration, as one X-macro table): a new op is a kernel
 *                    file (src/kernels/ref/kl_<op>_<type>.c) and one table row.
 * kl_model.c compiles the parts as one translation unit, so that the
 * compiler inlines across them as it did when they were one file (the
 * instruction counts of docs/ are unchanged by the split).
 * Internal: nothing here is public API. The numpy twin is
 * scripts/kilolearn/core/reference.py. */
#ifndef KL_MODEL_PRIV_H
#define KL_MODEL_PRIV_H

#include <stdint.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_kernels.h"
#include "../kl_blob_read.h"

#define ADD_SHIFT_MAX 21

/* engine-internal op flag (the blob's flags never set it: kl_blob_check):
 * the int8 dense weights are in the paired layout (kl_fc_pair_s8) */
#define KL_OP_PAIRED 0x80u

static inline int kl_paired(const kl_op_t *op)
{
	return KL_FC_PAIRED && (op->flags & KL_OP_PAIRED) != 0u;
}

static inline int kl_trainable(const kl_op_t *op)
{
	return (op->flags & KL_OP_TRAINABLE) != 0u;
}

/* trainable, but only its bias: weights stay frozen (read in place) */
static inline int kl_bias_only(const kl_op_t *op)
{
	return (op->flags & KL_OP_BIAS_ONLY) != 0u;
}

static inline uint32_t kl_tsize(const kl_tensor_t *t)
{
	return (uint32_t)t->h * t->w * t->c;
}

/* channels of t kept when partial (KL_UPDATE_PARTIAL), 0 = all */
static inline uint32_t kl_pk(const kl_model_t *m, const kl_tensor_t *t)
{
	return m->part != NULL ? m->part[t - m->tensors].pk : 0u;
}

static inline kl_part_t *kl_part(const kl_model_t *m, const kl_tensor_t *t)
{
	return &m->part[t - m->tensors];
}

/* elements of t that are live: its kept block when partial */
static inline uint32_t kl_lsize(const kl_model_t *m, const kl_tensor_t *t)
{
	const uint32_t pk = kl_pk(m, t);
	return (uint32_t)t->h * t->w * (pk != 0u ? pk : t->c);
}

static inline kl_geom_t kl_geom(const kl_model_t *m, const kl_op_t *op)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	const kl_tensor_t *y = &m->tensors[op->out];
	kl_geom_t g;
	g.h = x->h;
	g.w = x->w;
	g.c = x->c;
	g.ho = y->h;
	g.wo = y->w;
	g.co = y->c;
	g.kh = op->kh;
	g.kw = op->kw;
	g.stride = op->stride;
	g.pad_t = op->pad_t;
	g.pad_l = op->pad_l;
	return g;
}

static inline uint32_t kl_umax(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}

/* does the backward step of op compute an input gradient? */
static inline int kl_need_dx(const kl_model_t *m, const kl_op_t *op)
{
	return m->tensors[op->in0].need_grad ||
	       (op->kind == KL_OP_ADD && m->tensors[op->in1].need_grad);
}

static inline uint32_t kl_align8(uint32_t v)
{
	return (v + 7u) & ~7u;
}

static inline void kl_phase(const kl_model_t *m, int p)
{
	if (m->hook != NULL) {
		m->hook(m->hook_ctx, p);
	}
}

/* output channels of an op with parameters (dense: its outputs) */
static inline uint32_t kl_n_channels(const kl_model_t *m, const kl_op_t *op)
{
	const kl_tensor_t *y = &m->tensors[op->out];
	return op->kind == KL_OP_DENSE ? kl_tsize(y) : y->c;
}

/* A sample the engine can read: float32 samples are read as floats, so they
 * must sit on a 4-byte boundary (a Cortex-M faults on unaligned VLDR/LDRD). */
static inline int kl_sample_ok(const kl_model_t *m, const void *x)
{
	return x != NULL && (m->dtype != KL_DTYPE_F32 || ((uintptr_t)x & 3u) == 0u);
}

/* ---- the op table (kl_ops.c) ----------------------------------------------------
 * Entry points of each op kind, dispatched by op_*() switches generated from
 * one table (KL_OPS). g is the op's geometry; for a channel-sparse op
 * (Paissan) w, dy and n_out (or g->co) describe the active block only.
 *   op_fwd_*  output activations; op_fwd_s8 returns nonzero when an output
 *             saturated (rq: the op's requantisation, made by the caller)
 *   op_dx_*   input gradient(s), handed to the input tensor(s) (kl_give_*);
 *             called when an input needs a gradient; ey: dy's exponent
 *   op_dw_*   weight and bias gradients into gw, gb (ops with parameters; the
 *             dense op's fused update does not come here) */

/* ---- across the parts (one translation unit: kl_model.c) ------------------------ */
/* kl_forward.c */
static void kl_forward_op(kl_model_t *m, kl_op_t *op);
static int kl_forward_ops(kl_model_t *m, int first, int training);
static int kl_predicted(const kl_model_t *m);
/* kl_backward.c */
static void kl_give_f32(kl_model_t *m, int t_id);
static void kl_give_s8(kl_model_t *m, int t_id, int e);
static void kl_give_s8_compact(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *w,
			const int8_t *dy, int e);
static void kl_loss(kl_model_t *m, int label);
static void kl_backward_op(kl_model_t *m, kl_op_t *op, int keep, int compact);
static void kl_backward(kl_model_t *m, int label, int keep);
/* kl_update.c */
static int kl_channel_sparse(const kl_model_t *m, const kl_op_t *op);
static void kl_active_block(const kl_model_t *m, uint32_t n_ch, uint32_t *c0, uint32_t *k);
static void kl_active_channels(kl_model_t *m, const kl_op_t *op, kl_geom_t *g, uint32_t es,
			const void **w, const void **dy, int *n_out, uint32_t *c0, uint32_t *nk);
static void *kl_upd_scratch(const kl_model_t *m, const kl_tensor_t *x);
static int kl_partial_user(const kl_model_t *m, int t);
static uint32_t upd_count(uint32_t n, uint32_t permille);
static void kl_pack_partial(kl_model_t *m, kl_tensor_t *x);
static void kl_backward_partial_s8(kl_model_t *m, kl_op_t *op);
static void kl_apply_f32(kl_model_t *m, kl_op_t *op, float *gw, float *gb, int n_b, uint32_t c0,
		  uint32_t nk);
static void kl_apply_s8(kl_model_t *m, kl_op_t *op, int32_t *gw, int32_t *gb, int n_b, uint32_t c0,
		 uint32_t nk);
static void kl_update_dense_f32(kl_model_t *m, kl_op_t *op, const float *x, const float *dy, int n_in,
			 int n_out, uint32_t c0, uint32_t nk);
static void kl_update_dense_s8(kl_model_t *m, kl_op_t *op, const kl_tensor_t *x, const int8_t *dy,
			int ey, int n_out, uint32_t c0, uint32_t nk);
static void kl_begin_update(kl_model_t *m);
static void kl_step_f32(kl_model_t *m, kl_op_t *op, float *gw, float *gb, int n_b, float scale);
static void kl_step_s8(kl_model_t *m, kl_op_t *op, int32_t *gw, int ew, int32_t *gb, int eb,
		       int n_b);
static void kl_defer_f32(kl_model_t *m, kl_op_t *op, float *gw, float *gb, int n_b);
static void kl_defer_s8(kl_model_t *m, kl_op_t *op, int32_t *gw, int ew, int32_t *gb, int eb,
			int n_b);
static void kl_batch_done(kl_model_t *m);
/* kl_paged.c */
static int kl_paged_op(const kl_op_t *op);
static int pg_forward(kl_model_t *m, kl_op_t *op, const kl_requant_t *rq);
static void pg_dx(kl_model_t *m, const kl_op_t *op, const void *dy, int ey);
static void pg_update(kl_model_t *m, kl_op_t *op, const void *dy, int ey);
static int pg_prepare(kl_model_t *m);
static int pg_commit(kl_model_t *m);
/* kl_model_init.c */
static void kl_pair_ops(kl_model_t *m);
/* kl_train.c */
static int kl_run_schedule(kl_model_t *m, int label, int keep);
static void kl_adapt_ranges(kl_model_t *m);

#endif /* KL_MODEL_PRIV_H */
