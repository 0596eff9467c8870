/* Model layout in the arena, forward, backward and update for graphs of
 * dense / conv / depthwise / pooling / add ops ending in softmax
 * cross-entropy. The numpy twin is scripts/kilolearn/reference.py. */
#include <string.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_kernels.h"
#include "kl_blob_read.h"

#define ADD_SHIFT_MAX 21

static int trainable(const kl_op_t *op)
{
	return (op->flags & KL_OP_TRAINABLE) != 0u;
}

/* trainable, but only its bias: weights stay frozen (read in place) */
static int bias_only(const kl_op_t *op)
{
	return (op->flags & KL_OP_BIAS_ONLY) != 0u;
}

static uint32_t tsize(const kl_tensor_t *t)
{
	return (uint32_t)t->h * t->w * t->c;
}

static void *arena_copy(kl_arena_t *a, const uint8_t *src, size_t size)
{
	void *p = kl_arena_alloc(a, size, 4u);
	if (p != NULL) {
		memcpy(p, src, size);
	}
	return p;
}

static void *arena_zeros(kl_arena_t *a, size_t size)
{
	void *p = kl_arena_alloc(a, size, 4u);
	if (p != NULL) {
		memset(p, 0, size);
	}
	return p;
}

static kl_geom_t geom(const kl_model_t *m, const kl_op_t *op)
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

static uint32_t umax(uint32_t a, uint32_t b)
{
	return a > b ? a : b;
}

/* does the backward step of op compute an input gradient? */
static int need_dx(const kl_model_t *m, const kl_op_t *op)
{
	return m->tensors[op->in0].need_grad ||
	       (op->kind == KL_OP_ADD && m->tensors[op->in1].need_grad);
}

static uint32_t align8(uint32_t v)
{
	return (v + 7u) & ~7u;
}

/* Bytes of scratch an op needs: forward (dense s8 kernel scratch) and, for
 * training, the input-gradient accumulators (only when the input needs a
 * gradient) and the update's weight and bias gradients. in_place: the
 * schedule put the int8 input gradient at the start or the end of this
 * scratch (KL_STEP_IN_PLACE); the update's part then lies after it (start)
 * or before it (end). Mirrored by kl_blob.c and planner.MemModel._op_scratch. */
static uint32_t op_scratch(const kl_model_t *m, const kl_op_t *op, int training, int in_place)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	const kl_tensor_t *y = &m->tensors[op->out];
	const int s8_dense = op->kind == KL_OP_DENSE && m->dtype == KL_DTYPE_S8;
	uint32_t need = s8_dense ? KL_FC_S8_SCRATCH(tsize(x), tsize(y)) : 0u;
	if (training) {
		if (need_dx(m, op)) {
			need = umax(need, tsize(x) * 4u); /* input-gradient accumulators */
		}
		uint32_t upd = 0;
		if (trainable(op) && op->n_w != 0u) {
			const uint32_t n_b = op->kind == KL_OP_DENSE ? tsize(y) : y->c;
			if (bias_only(op)) {
				upd = n_b * 4u;
			} else if (op->kind == KL_OP_CONV || op->kind == KL_OP_DWCONV) {
				upd = (op->n_w + n_b) * 4u; /* weight gradients */
			} else if (s8_dense) {
				upd = KL_FC_S8_SCRATCH(tsize(x), tsize(y)); /* fused SGD */
			}
		}
		const uint32_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
		need = umax(need, (in_place ? align8(tsize(x) * es) : 0u) + upd);
	}
	return need;
}

/* ---- selective updates (docs/selective-updates.md) ------------------------- */

/* weights of an op a policy selects among (trainable weights, not bias only) */
static int sel_op(const kl_op_t *op)
{
	return trainable(op) && !bias_only(op) && op->n_w != 0u;
}

/* output channels of an op with parameters (dense: its outputs) */
static uint32_t n_channels(const kl_model_t *m, const kl_op_t *op)
{
	const kl_tensor_t *y = &m->tensors[op->out];
	return op->kind == KL_OP_DENSE ? tsize(y) : y->c;
}

/* round(n * permille / 1000), at least 1, at most n */
static uint32_t upd_count(uint32_t n, uint32_t permille)
{
	const uint64_t k = ((uint64_t)n * permille + KL_UPDATE_FRAC_ONE / 2u) / KL_UPDATE_FRAC_ONE;
	return k < 1u ? 1u : (k > n ? n : (uint32_t)k);
}

/* Paissan: does this op backpropagate through a block of channels only? (not
 * the classifier: its output channels are the classes) */
static int channel_sparse(const kl_model_t *m, const kl_op_t *op)
{
	return m->upd_policy == KL_UPDATE_CHANNEL_SPARSE && sel_op(op) &&
	       (op->kind == KL_OP_DENSE || op->kind == KL_OP_CONV) && op->out != m->output;
}

/* The active block [c0, c0 + k) this step: blocks of k channels in turn,
 * the last one ending at the last channel. */
static void active_block(const kl_model_t *m, uint32_t n_ch, uint32_t *c0, uint32_t *k)
{
	*k = upd_count(n_ch, m->upd_frac);
	const uint32_t nb = (n_ch + *k - 1u) / *k;
	const uint32_t s = (m->upd_step % nb) * *k;
	*c0 = s + *k > n_ch ? n_ch - *k : s;
}

/* bytes of selection scratch a policy needs for this model */
static uint32_t sel_need(const kl_model_t *m, int policy, uint32_t permille)
{
	const uint32_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
	uint32_t need = 0;
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		if (!sel_op(op)) {
			continue;
		}
		const uint32_t n_ch = n_channels(m, op);
		if (policy == KL_UPDATE_TOPR) {
			need = umax(need, KL_TOPR_HIST_WORDS * 4u);
		} else if (policy == KL_UPDATE_CHANNEL_NORM) { /* scores, picks, masked dy */
			need = umax(need, align8(n_ch * 9u) + n_ch * 4u);
		} else if (policy == KL_UPDATE_CHANNEL_SPARSE && op->kind == KL_OP_CONV) {
			const kl_tensor_t *y = &m->tensors[op->out];
			need = umax(need, (uint32_t)y->h * y->w * upd_count(n_ch, permille) * es);
		}
	}
	return need;
}

int kl_model_set_update_policy(kl_model_t *m, int policy, uint32_t permille)
{
	if (m == NULL || m->ops == NULL || policy < 0 || policy >= KL_UPDATE_POLICY_COUNT ||
	    permille > KL_UPDATE_FRAC_ONE || (policy != KL_UPDATE_ALL && permille == 0u)) {
		return KL_EINVAL;
	}
	if (policy != KL_UPDATE_ALL && m->momentum != 0.0f) {
		return KL_ENOTSUP;
	}
	const uint32_t need = sel_need(m, policy, permille);
	if (need > m->sel_size) {
		void *p = kl_arena_alloc(m->arena, need, 8u);
		if (p == NULL) {
			return KL_ENOMEM;
		}
		m->sel = p;
		m->sel_size = need;
	}
	m->upd_policy = (uint8_t)policy;
	m->upd_frac = (uint16_t)(policy == KL_UPDATE_ALL ? KL_UPDATE_FRAC_ONE : permille);
	m->upd_step = 0;
	return KL_OK;
}

/* Deutel: mark the k channels with the largest score (ties: lower index) */
static void pick_channels(const uint64_t *score, uint8_t *taken, uint32_t n, uint32_t k)
{
	memset(taken, 0, n);
	for (uint32_t r = 0; r < k; r++) {
		uint32_t best = n;
		for (uint32_t c = 0; c < n; c++) {
			if (!taken[c] && (best == n || score[c] > score[best])) {
				best = c;
			}
		}
		taken[best] = 1u;
	}
}

/* Channel c's weights sit at c * cs + j * es, j < row (dense and conv: rows
 * of [out][...]; depthwise: columns of [kh][kw][c]). */
typedef struct {
	uint32_t n_ch, row, cs, es;
} kl_chan_t;

static kl_chan_t chan_layout(const kl_model_t *m, const kl_op_t *op)
{
	kl_chan_t l;
	l.n_ch = n_channels(m, op);
	l.row = op->n_w / l.n_ch;
	l.cs = op->kind == KL_OP_DWCONV ? 1u : l.row;
	l.es = op->kind == KL_OP_DWCONV ? l.n_ch : 1u;
	return l;
}

/* Deutel on kept or computed gradients: score = squared norm of a channel's
 * weight and bias gradients; the gradients of the unpicked channels are
 * zeroed (a zero gradient leaves a weight unchanged). Returns the weights
 * kept. */
static uint32_t keep_top_channels_s8(kl_model_t *m, const kl_op_t *op, int32_t *gw, int32_t *gb)
{
	const kl_chan_t l = chan_layout(m, op);
	uint64_t *score = m->sel;
	uint8_t *taken = (uint8_t *)m->sel + 8u * l.n_ch;
	for (uint32_t c = 0; c < l.n_ch; c++) {
		uint64_t sc = (uint64_t)((int64_t)gb[c] * gb[c]);
		for (uint32_t j = 0; j < l.row; j++) {
			const int64_t v = gw[c * l.cs + j * l.es];
			sc += (uint64_t)(v * v);
		}
		score[c] = sc;
	}
	const uint32_t k = upd_count(l.n_ch, m->upd_frac);
	pick_channels(score, taken, l.n_ch, k);
	for (uint32_t c = 0; c < l.n_ch; c++) {
		if (!taken[c]) {
			gb[c] = 0;
			for (uint32_t j = 0; j < l.row; j++) {
				gw[c * l.cs + j * l.es] = 0;
			}
		}
	}
	return k * l.row;
}

static uint32_t keep_top_channels_f32(kl_model_t *m, const kl_op_t *op, float *gw, float *gb)
{
	const kl_chan_t l = chan_layout(m, op);
	uint64_t *score = m->sel;
	uint8_t *taken = (uint8_t *)m->sel + 8u * l.n_ch;
	for (uint32_t c = 0; c < l.n_ch; c++) {
		double sc = (double)gb[c] * (double)gb[c];
		for (uint32_t j = 0; j < l.row; j++) {
			const double v = (double)gw[c * l.cs + j * l.es];
			sc += v * v;
		}
		memcpy(&score[c], &sc, sizeof(sc)); /* ordered like the value (>= 0) */
	}
	const uint32_t k = upd_count(l.n_ch, m->upd_frac);
	pick_channels(score, taken, l.n_ch, k);
	for (uint32_t c = 0; c < l.n_ch; c++) {
		if (!taken[c]) {
			gb[c] = 0.0f;
			for (uint32_t j = 0; j < l.row; j++) {
				gw[c * l.cs + j * l.es] = 0.0f;
			}
		}
	}
	return k * l.row;
}

/* Deutel for the fused dense update: a channel's gradient norm is
 * |dy_i| * sqrt(|x|^2 + 1), so ranking by dy_i^2 picks the same channels.
 * Writes dy with the unpicked channels zeroed to `out`. */
static void top_channels_dy(kl_model_t *m, const void *dy, void *out, uint32_t n, int s8)
{
	uint64_t *score = m->sel;
	uint8_t *taken = (uint8_t *)m->sel + 8u * n;
	for (uint32_t c = 0; c < n; c++) {
		if (s8) {
			const int32_t v = ((const int8_t *)dy)[c];
			score[c] = (uint64_t)(v * v);
		} else {
			const double v = (double)((const float *)dy)[c];
			const double sq = v * v;
			memcpy(&score[c], &sq, sizeof(sq));
		}
	}
	pick_channels(score, taken, n, upd_count(n, m->upd_frac));
	for (uint32_t c = 0; c < n; c++) {
		if (s8) {
			((int8_t *)out)[c] = taken[c] ? ((const int8_t *)dy)[c] : 0;
		} else {
			((float *)out)[c] = taken[c] ? ((const float *)dy)[c] : 0.0f;
		}
	}
}

/* Paissan: the gradient of output channels [c0, c0 + k) of an HWC tensor
 * with c channels, packed as a tensor of k channels */
static void pack_channels(const uint8_t *dy, uint8_t *out, uint32_t positions, uint32_t c,
			  uint32_t c0, uint32_t k, uint32_t es)
{
	for (uint32_t p = 0; p < positions; p++) {
		memcpy(out + (size_t)p * k * es, dy + ((size_t)p * c + c0) * es, (size_t)k * es);
	}
}

/* The update's scratch: after the input gradient when the schedule made it
 * in place at the start of the step's scratch (kl_blob_check sized it so),
 * else the scratch itself (an input gradient at the end lies after it). */
static void *upd_scratch(const kl_model_t *m, const kl_tensor_t *x)
{
	if ((const void *)x->grad == m->scratch) {
		const uint32_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
		return (uint8_t *)m->scratch + align8(tsize(x) * es);
	}
	return m->scratch;
}

int kl_model_init(kl_model_t *m, const uint8_t *blob, size_t len, kl_arena_t *arena,
		  const kl_train_cfg_t *cfg)
{
	if (m == NULL || arena == NULL || ((uintptr_t)blob & 3u) != 0u) {
		return KL_EINVAL;
	}
	int err = kl_blob_check(blob, len);
	if (err != KL_OK) {
		return err;
	}
	memset(m, 0, sizeof(*m));
	m->arena = arena;
	m->dtype = blob[KL_BH_DTYPE];
	m->n_tensors = kl_rd16(blob + KL_BH_N_TENSORS);
	m->n_ops = kl_rd16(blob + KL_BH_N_OPS);
	m->input = kl_rd16(blob + KL_BH_INPUT);
	m->output = kl_rd16(blob + KL_BH_OUTPUT);
	m->lut_exp = (int8_t)blob[KL_BH_LUT_EXP];
	const int s8 = m->dtype == KL_DTYPE_S8;
	if (s8) {
		m->lut = (const uint16_t *)(const void *)(blob + kl_rd32(blob + KL_BH_LUT));
	}
	const int training = cfg != NULL;
	const uint32_t sched_off = training ? kl_blob_schedule(blob) : 0u;
	if (training) {
		if (!(cfg->lr >= 0.0f && cfg->lr <= 1.0f) ||
		    !(cfg->momentum >= 0.0f && cfg->momentum < 1.0f)) {
			return KL_EINVAL;
		}
		if (s8 && cfg->momentum != 0.0f) {
			return KL_ENOTSUP;
		}
		m->lr = cfg->lr;
		m->momentum = cfg->momentum;
		m->lr_q = (int32_t)(cfg->lr * (float)(1 << KL_LR_FRAC_BITS) + 0.5f);
		m->dither = cfg->seed;
		m->flags = cfg->flags;
	}
	m->tensors = arena_zeros(arena, sizeof(kl_tensor_t) * m->n_tensors);
	m->ops = arena_zeros(arena, sizeof(kl_op_t) * m->n_ops);
	if (m->tensors == NULL || m->ops == NULL) {
		return KL_ENOMEM;
	}
	const uint8_t *trec = blob + kl_rd32(blob + KL_BH_TENSORS);
	for (int k = 0; k < m->n_tensors; k++) {
		kl_tensor_t *t = &m->tensors[k];
		const uint8_t *r = trec + (uint32_t)k * KL_BLOB_TENSOR_SIZE;
		t->h = kl_rd16(r + KL_BT_H);
		t->w = kl_rd16(r + KL_BT_W);
		t->c = kl_rd16(r + KL_BT_C);
		t->exp = (int8_t)r[KL_BT_EXP];
		t->zp = (int8_t)r[KL_BT_ZP];
		t->producer = -1;
	}
	const size_t es = s8 ? 1u : 4u;
	const uint8_t *orec = blob + kl_rd32(blob + KL_BH_OPS);
	for (int i = 0; i < m->n_ops; i++) {
		kl_op_t *op = &m->ops[i];
		const uint8_t *r = orec + (uint32_t)i * KL_BLOB_OP_SIZE;
		op->kind = r[KL_BO_KIND];
		op->act = r[KL_BO_ACT];
		op->flags = training ? r[KL_BO_FLAGS] : 0u;
		op->stride = r[KL_BO_STRIDE];
		op->kh = r[KL_BO_KH];
		op->kw = r[KL_BO_KW];
		op->pad_t = r[KL_BO_PAD];
		op->pad_l = r[KL_BO_PAD + 1];
		op->pad_b = r[KL_BO_PAD + 2];
		op->pad_r = r[KL_BO_PAD + 3];
		op->w_exp = (int8_t)r[KL_BO_W_EXP];
		op->b_exp = (int8_t)r[KL_BO_B_EXP];
		op->in0 = kl_rd16(r + KL_BO_IN0);
		op->in1 = kl_rd16(r + KL_BO_IN1);
		op->out = kl_rd16(r + KL_BO_OUT);
		kl_tensor_t *y = &m->tensors[op->out];
		y->producer = (int16_t)i;
		m->tensors[op->in0].n_users++;
		if (op->kind == KL_OP_ADD) {
			m->tensors[op->in1].n_users++;
		}
		/* backprop needs a tensor's gradient when a trainable op is at or before it */
		y->need_grad = (uint8_t)(trainable(op) || m->tensors[op->in0].need_grad ||
					 (op->kind == KL_OP_ADD && m->tensors[op->in1].need_grad));
		op->n_w = kl_rd32(r + KL_BO_W_SIZE) / (uint32_t)es;
		if (op->n_w == 0u) {
			continue;
		}
		const uint8_t *w = blob + kl_rd32(r + KL_BO_W_OFF);
		const uint8_t *b = blob + kl_rd32(r + KL_BO_B_OFF);
		const size_t bsize = kl_rd32(r + KL_BO_B_SIZE);
		if (trainable(op)) {
			const int wt = !bias_only(op); /* the weights train too */
			op->w = wt ? arena_copy(arena, w, op->n_w * es) : (void *)(uintptr_t)w;
			op->b = arena_copy(arena, b, bsize);
			if (op->w == NULL || op->b == NULL) {
				return KL_ENOMEM;
			}
			if (!s8 && m->momentum != 0.0f) {
				op->vw = wt ? arena_zeros(arena, op->n_w * 4u) : NULL;
				op->vb = arena_zeros(arena, bsize);
				if ((wt && op->vw == NULL) || op->vb == NULL) {
					return KL_ENOMEM;
				}
			}
			if (m->flags & KL_CFG_KEEP_GRADS) {
				op->gw = wt ? kl_arena_alloc(arena, op->n_w * 4u, 4u) : NULL;
				op->gb = kl_arena_alloc(arena, bsize, 4u);
				if ((wt && op->gw == NULL) || op->gb == NULL) {
					return KL_ENOMEM;
				}
			}
		} else { /* frozen: read in place (possibly from flash) */
			op->w = (void *)(uintptr_t)w;
			op->b = (void *)(uintptr_t)b;
		}
	}
	m->n_inputs = (uint16_t)tsize(&m->tensors[m->input]);
	m->n_classes = (uint16_t)tsize(&m->tensors[m->output]);
	uint32_t scratch = s8 ? m->n_classes * 4u : 0u;
	for (int k = 0; k < m->n_tensors && sched_off == 0u; k++) {
		kl_tensor_t *t = &m->tensors[k];
		if (k != m->input) {
			t->data = kl_arena_alloc(arena, tsize(t) * es, 4u);
			if (t->data == NULL) {
				return KL_ENOMEM;
			}
		}
		if (training && (t->need_grad || k == m->output)) {
			t->grad = kl_arena_alloc(arena, tsize(t) * es, 4u);
			if (t->grad == NULL) {
				return KL_ENOMEM;
			}
		}
	}
	uint32_t kscratch = 4u;
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		/* with a schedule each backward step gets its scratch in the region */
		scratch = umax(scratch, op_scratch(m, op, training && sched_off == 0u, 0));
		if (s8 && (op->kind == KL_OP_CONV || op->kind == KL_OP_DWCONV)) {
			const kl_geom_t g = geom(m, op);
			kscratch = umax(kscratch, KL_CONV_S8_SCRATCH(&g));
		}
	}
	m->scratch_size = scratch;
	m->scratch = kl_arena_alloc(arena, scratch, 8u);
	m->kscratch_size = kscratch;
	m->kscratch = kl_arena_alloc(arena, kscratch, 8u);
	if (m->scratch == NULL || m->kscratch == NULL) {
		return KL_ENOMEM;
	}
	if (sched_off != 0u) { /* every activation and gradient in one planned region */
		m->n_steps = kl_rd32(blob + sched_off + KL_SCHED_N_STEPS);
		m->region_size = kl_rd32(blob + sched_off + KL_SCHED_REGION);
		m->sched = blob + sched_off + KL_SCHED_HEADER_SIZE;
		m->region = kl_arena_alloc(arena, m->region_size, 8u);
		if (m->region == NULL) {
			return KL_ENOMEM;
		}
	}
	m->upd_frac = KL_UPDATE_FRAC_ONE;
	uint32_t permille = 0;
	const int policy = kl_blob_update_policy(blob, &permille);
	if (training && policy != KL_UPDATE_ALL) {
		return kl_model_set_update_policy(m, policy, permille);
	}
	return KL_OK;
}

static inline void phase(const kl_model_t *m, int p)
{
	if (m->hook != NULL) {
		m->hook(m->hook_ctx, p);
	}
}

/* ---- forward ---------------------------------------------------------------- */

static void forward_op_f32(kl_model_t *m, kl_op_t *op)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	kl_tensor_t *y = &m->tensors[op->out];
	const kl_geom_t g = geom(m, op);
	switch (op->kind) {
	case KL_OP_DENSE:
		kl_fully_connected_f32(x->data, op->w, op->b, y->data, (int)tsize(x), (int)tsize(y),
				       op->act);
		break;
	case KL_OP_CONV:
		kl_conv_f32(&g, x->data, op->w, op->b, y->data, op->act);
		break;
	case KL_OP_DWCONV:
		kl_depthwise_conv_f32(&g, x->data, op->w, op->b, y->data, op->act);
		break;
	case KL_OP_AVGPOOL:
		kl_avgpool_f32(&g, x->data, y->data);
		break;
	case KL_OP_MAXPOOL:
		kl_maxpool_f32(&g, x->data, y->data);
		break;
	default:
		kl_add_f32(x->data, m->tensors[op->in1].data, y->data, (int)tsize(y), op->act);
		break;
	}
}

static void forward_op_s8(kl_model_t *m, kl_op_t *op)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	kl_tensor_t *y = &m->tensors[op->out];
	const kl_geom_t g = geom(m, op);
	kl_requant_t rq;
	kl_requant_init(&rq, x->exp + op->w_exp, op->b_exp, y->exp, y->zp, op->act);
	int sat = 0;
	switch (op->kind) {
	case KL_OP_DENSE:
		sat = kl_fully_connected_s8(x->data, x->zp, op->w, op->b, &rq, y->data,
					    (int)tsize(x), (int)tsize(y), m->scratch);
		break;
	case KL_OP_CONV:
		sat = kl_conv_s8(&g, x->data, x->zp, op->w, op->b, &rq, y->data, m->kscratch);
		break;
	case KL_OP_DWCONV:
		sat = kl_depthwise_conv_s8(&g, x->data, x->zp, op->w, op->b, &rq, y->data,
					   m->kscratch);
		break;
	case KL_OP_AVGPOOL:
	case KL_OP_MAXPOOL:
		y->exp = x->exp; /* pooling keeps the input's scale */
		y->zp = x->zp;
		if (op->kind == KL_OP_AVGPOOL) {
			kl_avgpool_s8(&g, x->data, x->zp, y->data);
		} else {
			kl_maxpool_s8(&g, x->data, y->data);
		}
		break;
	default: {
		const kl_tensor_t *x1 = &m->tensors[op->in1];
		const int emin = x->exp < x1->exp ? x->exp : x1->exp;
		const int sa = x->exp - emin > ADD_SHIFT_MAX ? ADD_SHIFT_MAX : x->exp - emin;
		const int sb = x1->exp - emin > ADD_SHIFT_MAX ? ADD_SHIFT_MAX : x1->exp - emin;
		kl_requant_init(&rq, emin, emin, y->exp, y->zp, op->act);
		sat = kl_add_s8(x->data, x->zp, sa, x1->data, x1->zp, sb, &rq, y->data,
				(int)tsize(y));
		break;
	}
	}
	op->sat = (uint8_t)sat;
}

static void forward_op(kl_model_t *m, kl_op_t *op)
{
	if (m->dtype == KL_DTYPE_F32) {
		forward_op_f32(m, op);
	} else {
		forward_op_s8(m, op);
	}
}

static int predicted(const kl_model_t *m)
{
	const kl_tensor_t *out = &m->tensors[m->output];
	return m->dtype == KL_DTYPE_F32 ? kl_argmax_f32(out->data, m->n_classes, m->class_mask)
					: kl_argmax_s8(out->data, m->n_classes, m->class_mask);
}

/* run ops [first, n_ops) and return the predicted class */
static int forward_ops(kl_model_t *m, int first)
{
	phase(m, KL_PHASE_FORWARD);
	for (int i = first; i < m->n_ops; i++) {
		forward_op(m, &m->ops[i]);
	}
	return predicted(m);
}

static int run_schedule(kl_model_t *m, int label, int keep);

/* A sample the engine can read: float32 samples are read as floats, so they
 * must sit on a 4-byte boundary (a Cortex-M faults on unaligned VLDR/LDRD). */
static int sample_ok(const kl_model_t *m, const void *x)
{
	return x != NULL && (m->dtype != KL_DTYPE_F32 || ((uintptr_t)x & 3u) == 0u);
}

static int forward(kl_model_t *m, const void *x)
{
	if (m == NULL || !sample_ok(m, x)) {
		return KL_EINVAL;
	}
	m->tensors[m->input].data = (void *)(uintptr_t)x;
	return m->sched != NULL ? run_schedule(m, -1, 0) : forward_ops(m, 0);
}

int kl_predict(kl_model_t *m, const void *x)
{
	return forward(m, x);
}

int kl_model_check_cut(const kl_model_t *m, int t)
{
	if (m == NULL || t < 0 || t >= m->n_tensors || t == m->output) {
		return KL_EINVAL;
	}
	const int first = m->tensors[t].producer + 1;
	for (int i = first; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		const int p0 = m->tensors[op->in0].producer;
		const int p1 = op->kind == KL_OP_ADD ? m->tensors[op->in1].producer : first;
		if ((op->in0 != t && p0 < first) || (op->kind == KL_OP_ADD && op->in1 != t &&
						      p1 < first)) {
			return KL_EINVAL;
		}
	}
	return KL_OK;
}

const void *kl_logits(const kl_model_t *m)
{
	return m->tensors[m->output].data;
}

/* ---- backward ----------------------------------------------------------------- */

static int32_t relu6_q(int exp)
{
	return kl_rshift_round(6, exp);
}

/* zero gradient entries where the producing op's activation passed nothing */
static void mask_f32(const kl_tensor_t *t, int act, float *g)
{
	const float *y = t->data;
	const uint32_t n = tsize(t);
	if (act == KL_ACT_NONE) {
		return;
	}
	for (uint32_t k = 0; k < n; k++) {
		if (!(y[k] > 0.0f && (act != KL_ACT_RELU6 || y[k] < 6.0f))) {
			g[k] = 0.0f;
		}
	}
}

/* the same for int8 activations; g holds int8 gradients, or int32
 * accumulators when wide */
static void mask_s8_range(const kl_tensor_t *t, int act, void *g, int wide, uint32_t k0,
			  uint32_t n);

static void mask_s8(const kl_tensor_t *t, int act, void *g, int wide)
{
	mask_s8_range(t, act, g, wide, 0u, tsize(t));
}

/* mask elements k0 .. k0 + n - 1 of t's gradient; g points at element k0 */
static void mask_s8_range(const kl_tensor_t *t, int act, void *g, int wide, uint32_t k0,
			  uint32_t n)
{
	if (act == KL_ACT_NONE) {
		return;
	}
	const int8_t *y = (const int8_t *)t->data + k0;
	const int32_t zp = t->zp;
	/* passes where 0 < y - zp < q6 (kl_act_pass_s8; ReLU has no upper cap) */
	const int32_t q6 = act == KL_ACT_RELU6 ? relu6_q(t->exp) : INT32_MAX;
	if (wide) {
		int32_t *gw = g;
		for (uint32_t k = 0; k < n; k++) {
			const int32_t v = (int32_t)y[k] - zp;
			gw[k] = (v > 0 && v < q6) ? gw[k] : 0;
		}
	} else {
		int8_t *gn = g;
		for (uint32_t k = 0; k < n; k++) {
			const int32_t v = (int32_t)y[k] - zp;
			gn[k] = (v > 0 && v < q6) ? gn[k] : 0;
		}
	}
}

/* Hand tensor t the input gradient in the scratch buffer (float, or int32
 * accumulators with exponent e), summing with what it already has. */
static void give_f32(kl_model_t *m, int t_id)
{
	kl_tensor_t *t = &m->tensors[t_id];
	const float *v = m->scratch;
	float *g = t->grad;
	const uint32_t n = tsize(t);
	for (uint32_t k = 0; k < n; k++) {
		g[k] = t->has_grad ? g[k] + v[k] : v[k];
	}
	t->has_grad = 1;
}

static void give_s8(kl_model_t *m, int t_id, int e)
{
	kl_tensor_t *t = &m->tensors[t_id];
	int32_t *acc = m->scratch;
	const int n = (int)tsize(t);
	if (t->producer >= 0 && t->n_users == 1u) { /* mask first: a finer scale */
		mask_s8(t, m->ops[t->producer].act, acc, 1);
	}
	if (!t->has_grad) {
		t->grad_exp = (int8_t)(e + kl_quantize_grad_s8(acc, t->grad, n));
		t->has_grad = 1;
		return;
	}
	/* a second consumer: align both to the coarser exponent, add, requantise */
	const int e_new = e + kl_quantize_grad_s32(acc, n);
	const int e_old = t->grad_exp;
	const int e_sum = e_new > e_old ? e_new : e_old;
	const int8_t *old = t->grad;
	for (int k = 0; k < n; k++) {
		acc[k] = kl_rshift_round(old[k], e_sum - e_old) + kl_rshift_round(acc[k], e_sum - e_new);
	}
	t->grad_exp = (int8_t)(e_sum + kl_quantize_grad_s8(acc, t->grad, n));
}

/* largest magnitude of a compact step's kept sums: int16 (the sanitizer
 * test build narrows it so that every step re-shifts; at least 511, so the
 * final shift exceeds the kept one by 2 or more) */
#ifndef KL_COMPACT_MAX
#define KL_COMPACT_MAX 32767u
#endif
typedef char kl_compact_max_ok[(KL_COMPACT_MAX >= 511u && KL_COMPACT_MAX <= 32767u) ? 1 : -1];

/* round-to-odd right shift: the bits shifted out leave a 1 in the lowest
 * bit. Rounding the result again by k >= 2 bits (kl_rshift_round) gives
 * what rounding v by sh + k bits gives: a kept 1 marks "above the tie". */
static inline int32_t rshift_odd(int32_t v, int sh)
{
	return sh == 0 ? v : (v >> sh) | ((v & (int32_t)((1u << sh) - 1u)) != 0);
}

/* KL_STEP_COMPACT: the input gradient of a conv or depthwise op made in
 * bands of input rows. Each band's int32 sums (all output rows that reach
 * it, through a geometry cut to the band) are masked, then kept as int16
 * at a shift a that grows with the largest magnitude so far (earlier
 * bands re-shifted), rounded to odd; the final shift s >= a + 2 when
 * a > 0, so the int8 gradient equals kl_quantize_grad_s8 of the int32
 * sums. It is written over the int16 sums at the start of the scratch. */
static void give_s8_compact(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g,
			    const int8_t *w, const int8_t *dy, int e)
{
	kl_tensor_t *t = &m->tensors[op->in0];
	const uint32_t n = tsize(t), row = (uint32_t)g->w * (uint32_t)g->c;
	int16_t *st = m->scratch;
	int32_t *band = (int32_t *)(void *)((uint8_t *)m->scratch + align8(2u * n));
	const int rows = (int)kl_band_rows((uint32_t)g->h, (uint32_t)g->w, (uint32_t)g->c,
					   (uint32_t)g->stride);
	const int masked = t->producer >= 0 && t->n_users == 1u;
	const int act = masked ? m->ops[t->producer].act : KL_ACT_NONE;
	uint32_t mx = 0;
	int a = 0;
	for (int y0 = 0; y0 < g->h; y0 += rows) {
		const int y1 = y0 + rows < g->h ? y0 + rows : g->h;
		/* output rows oy with oy * stride + ky - pad_t in [y0, y1) */
		int lo = y0 + g->pad_t - g->kh + 1;
		lo = lo <= 0 ? 0 : (lo + g->stride - 1) / g->stride;
		int hi = (y1 - 1 + g->pad_t) / g->stride;
		hi = hi < g->ho - 1 ? hi : g->ho - 1;
		const uint32_t nb = (uint32_t)(y1 - y0) * row;
		if (hi < lo) {
			memset(band, 0, nb * 4u);
		} else {
			kl_geom_t b = *g;
			b.h = y1 - y0;
			b.pad_t = g->pad_t + y0 - lo * g->stride;
			b.ho = hi - lo + 1;
			const int8_t *d = dy + (long)lo * g->wo * g->co;
			if (op->kind == KL_OP_CONV) {
				kl_conv_backward_input_s8(&b, w, d, band, m->kscratch);
			} else {
				kl_depthwise_conv_backward_input_s8(&b, w, d, band, m->kscratch);
			}
		}
		mask_s8_range(t, act, band, 1, (uint32_t)y0 * row, nb);
		for (uint32_t k = 0; k < nb; k++) {
			const int32_t v = band[k];
			const uint32_t av = v < 0 ? 0u - (uint32_t)v : (uint32_t)v;
			mx = av > mx ? av : mx;
		}
		int a_new = a;
		while ((mx >> a_new) > KL_COMPACT_MAX) {
			a_new++;
		}
		if (a_new > a) { /* the bands so far, to the coarser shift */
			for (uint32_t k = 0; k < (uint32_t)y0 * row; k++) {
				st[k] = (int16_t)rshift_odd(st[k], a_new - a);
			}
			a = a_new;
		}
		int16_t *o = st + (uint32_t)y0 * row;
		for (uint32_t k = 0; k < nb; k++) {
			o[k] = (int16_t)rshift_odd(band[k], a);
		}
	}
	const int s = kl_grad_shift(mx);
	int8_t *gx = t->grad; /* == the scratch: byte k after int16 k was read */
	for (uint32_t k = 0; k < n; k++) {
		gx[k] = (int8_t)kl_rshift_round(st[k], s - a);
	}
	t->grad_exp = (int8_t)(e + s);
	t->has_grad = 1;
}

/* Apply float32 weight gradients gw (bias gb) of an op under the update
 * policy (fused steps and kl_apply_grads). c0/nk: the Paissan block, nk = 0
 * when the op is not channel-sparse. */
static void apply_f32(kl_model_t *m, kl_op_t *op, float *gw, float *gb, int n_b, uint32_t c0,
		      uint32_t nk)
{
	const uint32_t row = op->n_w / (uint32_t)n_b;
	uint32_t touched = op->n_w;
	if (nk != 0u) {
		kl_sgd_f32((float *)op->w + c0 * row, NULL, gw + c0 * row, m->lr, 0.0f,
			   (int)(nk * row));
		kl_sgd_f32((float *)op->b + c0, NULL, gb + c0, m->lr, 0.0f, (int)nk);
		m->upd_touched += nk * row;
		m->upd_weights += op->n_w;
		return;
	}
	if (m->upd_policy == KL_UPDATE_TOPR) {
		touched = kl_topr_sgd_weights_f32(op->w, gw, NULL, NULL, 1, (int)op->n_w, m->lr,
						  upd_count(op->n_w, m->upd_frac), m->sel);
	} else {
		if (m->upd_policy == KL_UPDATE_CHANNEL_NORM) {
			touched = keep_top_channels_f32(m, op, gw, gb);
		}
		kl_sgd_f32(op->w, op->vw, gw, m->lr, m->momentum, (int)op->n_w);
	}
	kl_sgd_f32(op->b, op->vb, gb, m->lr, m->momentum, n_b);
	m->upd_touched += touched;
	m->upd_weights += op->n_w;
}

/* the fused dense update (no weight gradient stored) */
static void update_dense_f32(kl_model_t *m, kl_op_t *op, const float *x, const float *dy,
			     int n_in, int n_out, uint32_t c0, uint32_t nk)
{
	float *w = op->w, *b = op->b;
	uint32_t touched = op->n_w;
	if (nk != 0u) {
		kl_fully_connected_sgd_f32(w + c0 * (uint32_t)n_in, b + c0, NULL, NULL, dy + c0, x,
					   m->lr, 0.0f, n_in, (int)nk);
		touched = nk * (uint32_t)n_in;
	} else if (m->upd_policy == KL_UPDATE_TOPR) {
		touched = kl_topr_sgd_weights_f32(w, NULL, dy, x, n_out, n_in, m->lr,
						  upd_count(op->n_w, m->upd_frac), m->sel);
		for (int i = 0; i < n_out; i++) {
			b[i] -= m->lr * dy[i];
		}
	} else if (m->upd_policy == KL_UPDATE_CHANNEL_NORM) {
		float *dsel = (float *)(void *)((uint8_t *)m->sel + align8((uint32_t)n_out * 9u));
		top_channels_dy(m, dy, dsel, (uint32_t)n_out, 0);
		kl_fully_connected_sgd_f32(w, b, NULL, NULL, dsel, x, m->lr, 0.0f, n_in, n_out);
		touched = upd_count((uint32_t)n_out, m->upd_frac) * (uint32_t)n_in;
	} else {
		kl_fully_connected_sgd_f32(w, b, op->vw, op->vb, dy, x, m->lr, m->momentum, n_in,
					   n_out);
	}
	m->upd_touched += touched;
	m->upd_weights += op->n_w;
}

/* Paissan: only channels [c0, c0 + nk) of a channel-sparse op backpropagate;
 * the dense kernels get those rows of W and dy (n_out = nk), the conv kernels
 * a geometry of nk output channels with the block's dy packed into m->sel.
 * es: bytes per weight and gradient element. Leaves everything as it is (nk
 * 0) for other ops. */
static void active_channels(kl_model_t *m, const kl_op_t *op, kl_geom_t *g, uint32_t es,
			    const void **w, const void **dy, int *n_out, uint32_t *c0,
			    uint32_t *nk)
{
	if (!channel_sparse(m, op)) {
		return;
	}
	active_block(m, n_channels(m, op), c0, nk);
	uint32_t row; /* elements of W per output channel */
	if (op->kind == KL_OP_DENSE) {
		row = tsize(&m->tensors[op->in0]);
		*dy = (const uint8_t *)*dy + *c0 * es;
		*n_out = (int)*nk;
	} else {
		row = op->n_w / (uint32_t)g->co;
		pack_channels((const uint8_t *)*dy, m->sel, (uint32_t)(g->ho * g->wo),
			      (uint32_t)g->co, *c0, *nk, es);
		*dy = m->sel;
		g->co = (int)*nk;
	}
	*w = (const uint8_t *)*w + *c0 * row * es;
}

static void backward_op_f32(kl_model_t *m, kl_op_t *op, int keep)
{
	kl_tensor_t *y = &m->tensors[op->out];
	const kl_tensor_t *x = &m->tensors[op->in0];
	float *dy = y->grad;
	phase(m, KL_PHASE_BACKWARD);
	mask_f32(y, op->act, dy);
	kl_geom_t g = geom(m, op);
	const int need_dx = x->need_grad;
	uint32_t c0 = 0, nk = 0;
	int n_out = (int)tsize(y);
	const void *wv = op->w, *dv = dy;
	active_channels(m, op, &g, 4u, &wv, &dv, &n_out, &c0, &nk);
	const float *wc = wv, *dyc = dv;
	switch (op->kind) {
	case KL_OP_DENSE:
		if (need_dx) {
			kl_fully_connected_backward_input_f32(wc, dyc, m->scratch, (int)tsize(x),
							      n_out);
			give_f32(m, op->in0);
		}
		break;
	case KL_OP_CONV:
		if (need_dx) {
			kl_conv_backward_input_f32(&g, wc, dyc, m->scratch);
			give_f32(m, op->in0);
		}
		break;
	case KL_OP_DWCONV:
		if (need_dx) {
			kl_depthwise_conv_backward_input_f32(&g, op->w, dy, m->scratch);
			give_f32(m, op->in0);
		}
		break;
	case KL_OP_AVGPOOL:
		if (need_dx) {
			kl_avgpool_backward_f32(&g, dy, m->scratch);
			give_f32(m, op->in0);
		}
		break;
	case KL_OP_MAXPOOL:
		if (need_dx) {
			kl_maxpool_backward_f32(&g, x->data, dy, m->scratch);
			give_f32(m, op->in0);
		}
		break;
	default:
		for (int k = 0; k < 2; k++) {
			const int t = k == 0 ? op->in0 : op->in1;
			if (m->tensors[t].need_grad) {
				memmove(m->scratch, dy, tsize(y) * 4u); /* planned: may not overlap, but be safe */
				give_f32(m, t);
			}
		}
		break;
	}
	if (!trainable(op)) {
		return;
	}
	phase(m, KL_PHASE_UPDATE);
	const int n_b = (int)n_channels(m, op);
	float *const wsc = upd_scratch(m, x);
	float *gw = keep ? op->gw : wsc;
	float *gb = keep ? op->gb : bias_only(op) ? wsc : wsc + op->n_w;
	if (bias_only(op)) { /* gb = dy summed over positions */
		const int n_pos = (int)(tsize(y) / (uint32_t)n_b);
		for (int c = 0; c < n_b; c++) {
			gb[c] = 0.0f;
		}
		for (int p = 0; p < n_pos; p++) {
			for (int c = 0; c < n_b; c++) {
				gb[c] += dy[p * n_b + c];
			}
		}
		if (!keep) {
			kl_sgd_f32(op->b, op->vb, gb, m->lr, m->momentum, n_b);
		}
		return;
	}
	if (nk != 0u && keep) { /* the skipped channels' gradients are zero */
		memset(gw, 0, op->n_w * 4u);
		memset(gb, 0, (size_t)n_b * 4u);
	}
	const uint32_t row = op->n_w / (uint32_t)n_b;
	if (op->kind == KL_OP_DENSE) {
		if (!keep) {
			update_dense_f32(m, op, x->data, dy, (int)tsize(x), n_b, c0, nk);
			return;
		}
		kl_fully_connected_grad_f32(dyc, x->data, gw + c0 * row, gb + c0, (int)tsize(x),
					    n_out);
	} else if (op->kind == KL_OP_CONV) {
		kl_conv_grad_f32(&g, x->data, dyc, gw + c0 * row, gb + c0);
	} else {
		kl_depthwise_conv_grad_f32(&g, x->data, dy, gw, gb);
	}
	if (!keep) {
		apply_f32(m, op, gw, gb, n_b, c0, nk);
	}
}

/* Apply int8 weight gradients (the same for fused steps and
 * kl_apply_grads). */
static void apply_s8(kl_model_t *m, kl_op_t *op, int32_t *gw, int32_t *gb, int n_b, uint32_t c0,
		     uint32_t nk)
{
	const int w_shift = op->w_exp + KL_LR_FRAC_BITS - op->gw_exp;
	const int b_shift = op->b_exp + KL_LR_FRAC_BITS - op->gb_exp;
	const uint32_t row = op->n_w / (uint32_t)n_b;
	uint32_t touched = op->n_w;
	if (nk != 0u) { /* the dither advances over the whole tensor */
		uint32_t d = m->dither + c0 * row * KL_WEYL;
		kl_sgd_weights_s8((int8_t *)op->w + c0 * row, gw + c0 * row, m->lr_q, w_shift, &d,
				  (int)(nk * row));
		m->dither += op->n_w * KL_WEYL;
		kl_sgd_bias_s8((int32_t *)op->b + c0, gb + c0, m->lr_q, b_shift, (int)nk);
		touched = nk * row;
	} else {
		if (m->upd_policy == KL_UPDATE_TOPR) {
			touched = kl_topr_sgd_weights_s8(op->w, gw, NULL, NULL, 0, 1, (int)op->n_w,
							 m->lr_q, w_shift, &m->dither,
							 upd_count(op->n_w, m->upd_frac), m->sel);
		} else {
			if (m->upd_policy == KL_UPDATE_CHANNEL_NORM) {
				touched = keep_top_channels_s8(m, op, gw, gb);
			}
			kl_sgd_weights_s8(op->w, gw, m->lr_q, w_shift, &m->dither, (int)op->n_w);
		}
		kl_sgd_bias_s8(op->b, gb, m->lr_q, b_shift, n_b);
	}
	m->upd_touched += touched;
	m->upd_weights += op->n_w;
}

/* the fused dense update (no weight gradient stored) */
static void update_dense_s8(kl_model_t *m, kl_op_t *op, const kl_tensor_t *x, const int8_t *dy,
			    int ey, int n_out, uint32_t c0, uint32_t nk)
{
	const int n_in = (int)tsize(x);
	const int w_shift = op->w_exp + KL_LR_FRAC_BITS - ey - x->exp;
	const int b_shift = op->b_exp + KL_LR_FRAC_BITS - ey;
	int8_t *w = op->w;
	int32_t *b = op->b;
	uint32_t touched = op->n_w;
	if (nk != 0u) {
		uint32_t d = m->dither + c0 * (uint32_t)n_in * KL_WEYL;
		kl_fully_connected_sgd_s8(w + c0 * (uint32_t)n_in, b + c0, dy + c0, x->data, x->zp,
					  m->lr_q, w_shift, b_shift, &d, n_in, (int)nk, upd_scratch(m, x));
		m->dither += op->n_w * KL_WEYL;
		touched = nk * (uint32_t)n_in;
	} else if (m->upd_policy == KL_UPDATE_TOPR) {
		touched = kl_topr_sgd_weights_s8(w, NULL, dy, x->data, x->zp, n_out, n_in, m->lr_q,
						 w_shift, &m->dither,
						 upd_count(op->n_w, m->upd_frac), m->sel);
		for (int i = 0; i < n_out; i++) {
			b[i] = kl_sat32((int64_t)b[i] - kl_rshift_round((int32_t)dy[i] * m->lr_q,
									b_shift));
		}
	} else if (m->upd_policy == KL_UPDATE_CHANNEL_NORM) {
		int8_t *dsel = (int8_t *)m->sel + align8((uint32_t)n_out * 9u);
		top_channels_dy(m, dy, dsel, (uint32_t)n_out, 1);
		kl_fully_connected_sgd_s8(w, b, dsel, x->data, x->zp, m->lr_q, w_shift, b_shift,
					  &m->dither, n_in, n_out, upd_scratch(m, x));
		touched = upd_count((uint32_t)n_out, m->upd_frac) * (uint32_t)n_in;
	} else {
		kl_fully_connected_sgd_s8(w, b, dy, x->data, x->zp, m->lr_q, w_shift, b_shift,
					  &m->dither, n_in, n_out, upd_scratch(m, x));
	}
	m->upd_touched += touched;
	m->upd_weights += op->n_w;
}

/* compact: KL_STEP_COMPACT (conv, depthwise) */
static void backward_op_s8(kl_model_t *m, kl_op_t *op, int keep, int compact)
{
	kl_tensor_t *y = &m->tensors[op->out];
	const kl_tensor_t *x = &m->tensors[op->in0];
	int8_t *dy = y->grad;
	const int ey = y->grad_exp;
	phase(m, KL_PHASE_BACKWARD);
	if (y->n_users != 1u) { /* a single consumer masked it in give_s8 already */
		mask_s8(y, op->act, dy, 0);
	}
	kl_geom_t g = geom(m, op);
	const int need_dx = x->need_grad;
	uint32_t c0 = 0, nk = 0;
	int n_out = (int)tsize(y);
	const void *wv = op->w, *dv = dy;
	active_channels(m, op, &g, 1u, &wv, &dv, &n_out, &c0, &nk);
	const int8_t *wc = wv, *dyc = dv;
	switch (op->kind) {
	case KL_OP_DENSE:
		if (need_dx) {
			kl_fully_connected_backward_input_s8(wc, dyc, m->scratch, (int)tsize(x),
							     n_out);
			give_s8(m, op->in0, op->w_exp + ey);
		}
		break;
	case KL_OP_CONV:
		if (need_dx && compact) {
			give_s8_compact(m, op, &g, wc, dyc, op->w_exp + ey);
		} else if (need_dx) {
			kl_conv_backward_input_s8(&g, wc, dyc, m->scratch, m->kscratch);
			give_s8(m, op->in0, op->w_exp + ey);
		}
		break;
	case KL_OP_DWCONV:
		if (need_dx && compact) {
			give_s8_compact(m, op, &g, op->w, dy, op->w_exp + ey);
		} else if (need_dx) {
			kl_depthwise_conv_backward_input_s8(&g, op->w, dy, m->scratch,
							    m->kscratch);
			give_s8(m, op->in0, op->w_exp + ey);
		}
		break;
	case KL_OP_AVGPOOL:
		if (need_dx) {
			kl_avgpool_backward_s8(&g, dy, m->scratch);
			give_s8(m, op->in0, ey - 16);
		}
		break;
	case KL_OP_MAXPOOL:
		if (need_dx) {
			kl_maxpool_backward_s8(&g, x->data, dy, m->scratch);
			give_s8(m, op->in0, ey);
		}
		break;
	default:
		for (int k = 0; k < 2; k++) {
			const int t = k == 0 ? op->in0 : op->in1;
			if (m->tensors[t].need_grad) {
				int32_t *acc = m->scratch;
				for (uint32_t j = 0; j < tsize(y); j++) {
					acc[j] = dy[j];
				}
				give_s8(m, t, ey);
			}
		}
		break;
	}
	if (!trainable(op)) {
		return;
	}
	phase(m, KL_PHASE_UPDATE);
	const int xe = x->exp;
	const int n_b = (int)n_channels(m, op);
	int32_t *const wsc = upd_scratch(m, x);
	int32_t *gw = keep ? op->gw : wsc;
	int32_t *gb = keep ? op->gb : bias_only(op) ? wsc : wsc + op->n_w;
	if (bias_only(op)) { /* gb = dy summed over positions */
		const int n_pos = (int)(tsize(y) / (uint32_t)n_b);
		for (int c = 0; c < n_b; c++) {
			gb[c] = 0;
		}
		for (int p = 0; p < n_pos; p++) {
			for (int c = 0; c < n_b; c++) {
				gb[c] += dy[p * n_b + c];
			}
		}
		op->gb_exp = (int8_t)ey;
		if (!keep) {
			kl_sgd_bias_s8(op->b, gb, m->lr_q, op->b_exp + KL_LR_FRAC_BITS - ey, n_b);
		}
		return;
	}
	if (nk != 0u && keep) { /* the skipped channels' gradients are zero */
		memset(gw, 0, op->n_w * 4u);
		memset(gb, 0, (size_t)n_b * 4u);
	}
	const uint32_t row = op->n_w / (uint32_t)n_b;
	if (op->kind == KL_OP_DENSE) {
		if (!keep) {
			update_dense_s8(m, op, x, dy, ey, n_b, c0, nk);
			return;
		}
		kl_fully_connected_grad_s8(dyc, x->data, x->zp, gw + c0 * row, gb + c0,
					   (int)tsize(x), n_out);
	} else if (op->kind == KL_OP_CONV) {
		kl_conv_grad_s8(&g, x->data, x->zp, dyc, gw + c0 * row, gb + c0, m->kscratch);
	} else {
		kl_depthwise_conv_grad_s8(&g, x->data, x->zp, dy, gw, gb, m->kscratch);
	}
	op->gw_exp = (int8_t)(ey + xe);
	op->gb_exp = (int8_t)ey;
	if (!keep) {
		apply_s8(m, op, gw, gb, n_b, c0, nk);
	}
}

static void loss(kl_model_t *m, int label)
{
	for (int k = 0; k < m->n_tensors; k++) {
		m->tensors[k].has_grad = 0;
	}
	kl_tensor_t *out = &m->tensors[m->output];
	phase(m, KL_PHASE_LOSS);
	if (m->dtype == KL_DTYPE_F32) {
		kl_softmax_ce_f32(out->data, m->n_classes, label, m->class_mask, out->grad);
	} else {
		const int shift = out->exp - m->lut_exp;
		out->grad_exp = (int8_t)(-15 + kl_softmax_ce_s8(out->data, m->n_classes, label, m->lut,
							      shift < 0 ? 0 : shift, m->class_mask,
							      m->scratch, out->grad));
		m->logits_grad_exp = out->grad_exp;
	}
	out->has_grad = 1;
}

static void backward_op(kl_model_t *m, kl_op_t *op, int keep, int compact)
{
	if (!m->tensors[op->out].has_grad) {
		return;
	}
	if (m->dtype == KL_DTYPE_F32) {
		backward_op_f32(m, op, keep);
	} else {
		backward_op_s8(m, op, keep, compact);
	}
}

/* Backward pass; keep != 0 stores gradients in gw/gb instead of updating. */
static void backward(kl_model_t *m, int label, int keep)
{
	loss(m, label);
	for (int i = m->n_ops - 1; i >= 0; i--) {
		backward_op(m, &m->ops[i], keep, 0);
	}
}

/* Execute the blob's schedule (checked by kl_blob_check: every step reads
 * only live buffers inside the region). label < 0: forward steps up to the
 * loss only (prediction). Returns the predicted class. */
static int run_schedule(kl_model_t *m, int label, int keep)
{
	int pred = 0;
	const uint8_t *sp = m->sched;
	for (uint32_t k = 0; k < m->n_steps; k++, sp += KL_STEP_SIZE) {
		const int idx = kl_rd16(sp + KL_SS_INDEX);
		uint8_t *at = m->region + kl_rd32(sp + KL_SS_OFFSET);
		switch (sp[KL_SS_KIND]) {
		case KL_STEP_FWD:
			phase(m, KL_PHASE_FORWARD);
			m->tensors[m->ops[idx].out].data = at;
			forward_op(m, &m->ops[idx]);
			break;
		case KL_STEP_LOSS:
			pred = predicted(m);
			if (label < 0) {
				return pred;
			}
			m->tensors[idx].grad = at;
			loss(m, label);
			break;
		case KL_STEP_GRAD:
			m->tensors[idx].grad = at;
			m->tensors[idx].has_grad = 0;
			break;
		case KL_STEP_BWD: {
			void *const fwd_scratch = m->scratch;
			m->scratch = at; /* this step's int32 scratch, planned */
			backward_op(m, &m->ops[idx], keep,
				    (sp[KL_SS_FLAGS] & KL_STEP_COMPACT) != 0u);
			m->scratch = fwd_scratch;
			break;
		}
		case KL_STEP_FREE_DATA:
			m->tensors[idx].data = NULL;
			break;
		default:
			m->tensors[idx].grad = NULL;
			break;
		}
	}
	return pred;
}

/* Delayed dynamic activation scaling: an output that saturated in this
 * step's forward pass gets twice the range from the next step on. */
static void adapt_ranges(kl_model_t *m)
{
	if (m->dtype != KL_DTYPE_S8) {
		return;
	}
	for (int i = 0; i < m->n_ops; i++) {
		kl_op_t *op = &m->ops[i];
		kl_tensor_t *y = &m->tensors[op->out];
		if (op->sat && y->exp < KL_EXP_MAX) {
			y->exp++;
		}
		op->sat = 0;
	}
}

/* forward, loss and backward of one sample: all ops, or the schedule */
static int run_step(kl_model_t *m, const void *x, int label, int keep)
{
	m->tensors[m->input].data = (void *)(uintptr_t)x;
	if (m->sched != NULL) {
		return run_schedule(m, label, keep);
	}
	const int pred = forward_ops(m, 0);
	backward(m, label, keep);
	return pred;
}

static int check_step(const kl_model_t *m, const void *x, int label)
{
	if (m == NULL || !sample_ok(m, x) || label < 0 || label >= m->n_classes ||
	    (m->sched == NULL && m->tensors[m->output].grad == NULL)) {
		return KL_EINVAL;
	}
	return KL_OK;
}

int kl_train_step_from(kl_model_t *m, int t, const void *data, int label)
{
	int err = check_step(m, data, label);
	if (err == KL_OK && m->sched != NULL) {
		err = KL_ENOTSUP; /* the schedule runs whole steps */
	}
	if (err == KL_OK) {
		err = kl_model_check_cut(m, t);
	}
	if (err == KL_OK && m->tensors[t].need_grad) {
		err = KL_EINVAL; /* something before the cut trains: its inputs are gone */
	}
	if (err != KL_OK) {
		return err;
	}
	kl_tensor_t *cut = &m->tensors[t];
	void *own = cut->data;
	if (t == m->input) {
		cut->data = (void *)(uintptr_t)data;
	} else {
		memcpy(own, data, tsize(cut) * (m->dtype == KL_DTYPE_S8 ? 1u : 4u));
	}
	const int pred = forward_ops(m, cut->producer + 1);
	backward(m, label, 0);
	adapt_ranges(m);
	m->upd_step++;
	phase(m, KL_PHASE_DONE);
	return pred;
}

int kl_train_step(kl_model_t *m, const void *x, int label)
{
	int err = check_step(m, x, label);
	if (err != KL_OK) {
		return err;
	}
	const int pred = run_step(m, x, label, 0);
	adapt_ranges(m);
	m->upd_step++;
	phase(m, KL_PHASE_DONE);
	return pred;
}

int kl_compute_grads(kl_model_t *m, const void *x, int label)
{
	int err = check_step(m, x, label);
	if (err != KL_OK) {
		return err;
	}
	if (!(m->flags & KL_CFG_KEEP_GRADS)) {
		return KL_EINVAL;
	}
	return run_step(m, x, label, 1);
}

int kl_apply_grads(kl_model_t *m)
{
	if (m == NULL || !(m->flags & KL_CFG_KEEP_GRADS)) {
		return KL_EINVAL;
	}
	/* same order as the fused step: last op first */
	for (int i = m->n_ops - 1; i >= 0; i--) {
		kl_op_t *op = &m->ops[i];
		if (!trainable(op) || op->gb == NULL) {
			continue;
		}
		const int n_b = (int)n_channels(m, op);
		uint32_t c0 = 0, nk = 0;
		if (channel_sparse(m, op)) { /* the block kl_compute_grads used */
			active_block(m, (uint32_t)n_b, &c0, &nk);
		}
		if (m->dtype == KL_DTYPE_F32) {
			if (op->gw != NULL) {
				apply_f32(m, op, op->gw, op->gb, n_b, c0, nk);
			} else {
				kl_sgd_f32(op->b, op->vb, op->gb, m->lr, m->momentum, n_b);
			}
		} else {
			if (op->gw != NULL) {
				apply_s8(m, op, op->gw, op->gb, n_b, c0, nk);
			} else {
				kl_sgd_bias_s8(op->b, op->gb, m->lr_q,
					       op->b_exp + KL_LR_FRAC_BITS - op->gb_exp, n_b);
			}
		}
	}
	adapt_ranges(m);
	m->upd_step++;
	return KL_OK;
}
