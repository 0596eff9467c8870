/* Update policies (docs/selective-updates.md) and the SGD steps that apply
 * them: which weights a step writes, and the writing. */
/* A part of kl_model.c's translation unit (included there, not compiled alone). */
/* weights of an op a policy selects among (kl_trainable weights, not bias only) */
static int sel_op(const kl_op_t *op)
{
	return kl_trainable(op) && !kl_bias_only(op) && op->n_w != 0u;
}

/* round(n * permille / 1000), at least 1, at most n (in 32 bits when it fits:
 * a 64-bit division is a library call of a few hundred instructions) */
static uint32_t upd_count(uint32_t n, uint32_t permille)
{
	const uint32_t half = KL_UPDATE_FRAC_ONE / 2u;
	const uint64_t k = n <= (UINT32_MAX - half) / KL_UPDATE_FRAC_ONE
				   ? (uint64_t)((n * permille + half) / KL_UPDATE_FRAC_ONE)
				   : ((uint64_t)n * permille + half) / KL_UPDATE_FRAC_ONE;
	return k < 1u ? 1u : (k > n ? n : (uint32_t)k);
}

/* Paissan: does this op backpropagate through a block of channels only? (not
 * the classifier: its output channels are the classes) */
static int kl_channel_sparse(const kl_model_t *m, const kl_op_t *op)
{
	return m->upd_policy == KL_UPDATE_CHANNEL_SPARSE && sel_op(op) &&
	       (op->kind == KL_OP_DENSE || op->kind == KL_OP_CONV) && op->out != m->output;
}

/* The active block [c0, c0 + k) this step: blocks of k channels in turn,
 * the last one ending at the last channel. */
static void kl_active_block(const kl_model_t *m, uint32_t n_ch, uint32_t *c0, uint32_t *k)
{
	*k = upd_count(n_ch, m->upd_frac);
	const uint32_t nb = (n_ch + *k - 1u) / *k;
	const uint32_t s = (m->upd_step % nb) * *k;
	*c0 = s + *k > n_ch ? n_ch - *k : s;
}

/* Paissan's partial activations (KL_UPDATE_PARTIAL): does tensor t keep a
 * block of its channels only? Returns its consumer (a conv layer whose
 * weights train, right after t's producer: so at most two whole tensors are
 * alive in the forward pass), or -1. A tensor that needs a gradient must come
 * from a conv layer too (its backward step takes the block's gradient). */
static int kl_partial_user(const kl_model_t *m, int t)
{
	const kl_tensor_t *x = &m->tensors[t];
	if (m->dtype != KL_DTYPE_S8 || t == m->input || t == m->output || x->n_users != 1u ||
	    x->producer < 0 || x->producer + 1 >= m->n_ops) {
		return -1;
	}
	const int u = x->producer + 1;
	const kl_op_t *op = &m->ops[u];
	const kl_op_t *p = &m->ops[x->producer];
	if (op->kind != KL_OP_CONV || op->in0 != t || !sel_op(op) || kl_paged_op(op) ||
	    (x->need_grad && (p->kind != KL_OP_CONV || kl_paged_op(p)))) {
		return -1;
	}
	return u;
}

/* Mark the partial tensors for a fraction (pk: block size; 0 clears) */
static void mark_partial(kl_model_t *m, uint32_t permille)
{
	for (int t = 0; t < m->n_tensors && m->part != NULL; t++) {
		kl_tensor_t *x = &m->tensors[t];
		kl_part_t *p = &m->part[t];
		p->pk = (uint16_t)(permille != 0u && kl_partial_user(m, t) >= 0
					   ? upd_count(x->c, permille) : 0u);
		p->pc0 = 0;
		if (m->part_pm == 0u) { /* laid out whole: packed in place */
			p->full = NULL;
			p->kept = x->data;
		}
	}
}

/* After x's consumer ran forward: keep this step's block of x, packed
 * (positions in order, so packing in place never overwrites what is still
 * to be read) */
static void kl_pack_partial(kl_model_t *m, kl_tensor_t *x)
{
	uint32_t c0 = 0, k = 0;
	kl_active_block(m, x->c, &c0, &k);
	const uint32_t es = 1u; /* int8 only */
	kl_part_t *pt = kl_part(m, x);
	const uint8_t *src = x->data;
	uint8_t *dst = pt->kept;
	const uint32_t n = (uint32_t)x->h * x->w;
	for (uint32_t p = 0; p < n; p++) {
		memmove(dst + (size_t)p * k * es, src + ((size_t)p * x->c + c0) * es, (size_t)k * es);
	}
	pt->pc0 = (uint16_t)c0;
	x->data = pt->kept;
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
		const uint32_t n_ch = kl_n_channels(m, op);
		if (policy == KL_UPDATE_TOPR && es == 4u) {
			need = kl_umax(need, KL_TOPR_HIST_WORDS * 4u);
		} else if (policy == KL_UPDATE_TOPR) { /* dense: + two words per input column */
			const uint32_t words = KL_TOPR_S8_BINS + KL_TOPR_S8_LIST;
			const uint32_t cols =
				op->kind == KL_OP_DENSE ? kl_tsize(&m->tensors[op->in0]) : 0u;
			need = kl_umax(need, cols > (UINT32_MAX / 4u - words) / 2u
						     ? UINT32_MAX /* (no arena holds it) */
						     : (words + 2u * cols) * 4u);
		} else if (policy == KL_UPDATE_CHANNEL_NORM) { /* scores, picks, masked dy */
			need = kl_umax(need, kl_paged_op(op) ? 0u /* keys made as read */
							     : kl_align8(n_ch * 9u) + n_ch * 4u);
		} else if (policy == KL_UPDATE_PARTIAL && op->kind == KL_OP_CONV) {
			/* the block's weights, packed: at most the whole tensor */
			need = kl_umax(need, op->n_w);
		} else if (policy == KL_UPDATE_CHANNEL_SPARSE && op->kind == KL_OP_CONV) {
			const kl_tensor_t *y = &m->tensors[op->out];
			need = kl_umax(need, (uint32_t)y->h * y->w * upd_count(n_ch, permille) * es);
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
	if ((policy != KL_UPDATE_ALL && (m->momentum != 0.0f || m->defer)) ||
	    (m->paged && policy != KL_UPDATE_ALL && policy != KL_UPDATE_CHANNEL_NORM)) {
		return KL_ENOTSUP;
	}
	if (policy == KL_UPDATE_PARTIAL &&
	    (m->dtype != KL_DTYPE_S8 || m->sched != NULL || (m->flags & KL_CFG_KEEP_GRADS))) {
		return KL_ENOTSUP;
	}
	if (m->part_pm != 0u && (policy != KL_UPDATE_PARTIAL || permille != m->part_pm)) {
		return KL_ENOTSUP; /* buffers are sized for that block */
	}
	if (policy == KL_UPDATE_PARTIAL && m->part == NULL) {
		m->part = kl_arena_alloc(m->arena, sizeof(kl_part_t) * (size_t)m->n_tensors, 8u);
		if (m->part == NULL) {
			return KL_ENOMEM;
		}
		memset(m->part, 0, sizeof(kl_part_t) * (size_t)m->n_tensors);
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
	mark_partial(m, policy == KL_UPDATE_PARTIAL ? permille : 0u);
	m->upd_policy = (uint8_t)policy;
	m->upd_frac = (uint16_t)(policy == KL_UPDATE_ALL ? KL_UPDATE_FRAC_ONE : permille);
	m->upd_step = 0;
	kl_pair_ops(m); /* the weight layout the policy's kernels read */
	return KL_OK;
}

/* The k-th largest of n keys (1 <= k <= n), key(ctx, i) of `bytes` bytes,
 * by radix selection from the top byte: a pass over the keys per byte, a
 * 256-entry histogram on the stack, nothing else. With the count of keys
 * above it, it picks the k largest with ties to the lower index in one more
 * pass: O(n) for any k. */
typedef uint64_t (*kl_key_fn)(const void *ctx, uint32_t i);

static uint64_t kl_kth_largest(kl_key_fn key, const void *ctx, uint32_t n, uint32_t k, int bytes)
{
	uint64_t prefix = 0, mask = 0;
	for (int b = bytes - 1; b >= 0; b--) {
		uint32_t hist[256];
		memset(hist, 0, sizeof(hist));
		const int sh = 8 * b;
		for (uint32_t i = 0; i < n; i++) {
			const uint64_t v = key(ctx, i);
			if ((v & mask) == prefix) {
				hist[(v >> sh) & 0xFFu]++;
			}
		}
		uint32_t d = 255u;
		while (d > 0u && hist[d] < k) {
			k -= hist[d--];
		}
		prefix |= (uint64_t)d << sh;
		mask |= (uint64_t)0xFFu << sh;
	}
	return prefix;
}

static uint64_t score_key(const void *ctx, uint32_t i)
{
	return ((const uint64_t *)ctx)[i];
}

/* Deutel: mark the k channels with the largest score (ties: lower index).
 * A few picks: k passes (n k comparisons); more: the radix selection, whose
 * eight passes and histograms cost more than that below 16 picks. */
#define KL_PICK_PASSES_MAX 16u
static void pick_channels(const uint64_t *score, uint8_t *taken, uint32_t n, uint32_t k)
{
	if (k <= KL_PICK_PASSES_MAX) {
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
		return;
	}
	const uint64_t thr = kl_kth_largest(score_key, score, n, k, 8);
	uint32_t above = 0;
	for (uint32_t c = 0; c < n; c++) {
		above += score[c] > thr;
	}
	uint32_t ties = k - above;
	for (uint32_t c = 0; c < n; c++) {
		const int eq = score[c] == thr && ties != 0u;
		taken[c] = (uint8_t)(score[c] > thr || eq);
		ties -= (uint32_t)eq;
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
	l.n_ch = kl_n_channels(m, op);
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

/* Deutel for the fused dense update, int8: a channel's gradient norm is
 * |dy_i| * sqrt(|x|^2 + 1), so the k largest |dy_i| (ties: lower index) pick
 * the same channels. One pass keeps the k largest keys |dy_c| << 16 | (65535
 * - c) (unique, so ties go to the lower index) in a list sorted descending,
 * on the stack: most channels lose against its last entry in one compare.
 * Returns the gradient to update with: dy itself when at most k channels
 * have a non-zero gradient (then every one of them is picked; a zero one
 * writes nothing either way), else `o`: dy with the unpicked channels zeroed.
 * Large n or k (more than 65,536 channels, k > KL_PICK_LIST): the counting
 * selection over |dy| <= 128 (129 bins). */
#define KL_PICK_LIST 32u
static const int8_t *top_channels_dy_s8(const kl_model_t *m, const int8_t *d, int8_t *o,
				       uint32_t n)
{
	uint32_t k = upd_count(n, m->upd_frac);
	if (k <= KL_PICK_LIST && n <= 65536u) {
		uint32_t top[KL_PICK_LIST];
		uint32_t nt = 0, nz = 0;
		for (uint32_t c = 0; c < n; c++) {
			const int32_t v = d[c];
			if (v == 0) {
				continue;
			}
			const uint32_t key = (uint32_t)(v < 0 ? -v : v) << 16 | (65535u - c);
			nz++;
			if (nt == k && key <= top[k - 1u]) {
				continue;
			}
			uint32_t p = nt < k ? nt++ : k - 1u; /* insert: shift the smaller ones */
			while (p > 0u && top[p - 1u] < key) {
				top[p] = top[p - 1u];
				p--;
			}
			top[p] = key;
		}
		if (nz <= k) {
			return d;
		}
		memset(o, 0, n);
		for (uint32_t r = 0; r < k; r++) {
			const uint32_t c = 65535u - (top[r] & 0xFFFFu);
			o[c] = d[c];
		}
		return o;
	}
	uint32_t hist[129];
	memset(hist, 0, sizeof(hist));
	for (uint32_t c = 0; c < n; c++) {
		hist[d[c] < 0 ? -d[c] : d[c]]++;
	}
	int t = 128; /* the k-th largest |dy|; the first k of the channels at it are taken */
	while (t > 0 && hist[t] < k) {
		k -= hist[t--];
	}
	for (uint32_t c = 0; c < n; c++) {
		const int a = d[c] < 0 ? -d[c] : d[c];
		int take = a > t;
		if (a == t && k != 0u) {
			take = 1;
			k--;
		}
		o[c] = take ? d[c] : 0;
	}
	return o;
}

/* float32: ranking by dy_i^2 (the same order), the scores' radix selection.
 * Writes dy with the unpicked channels zeroed to `out`. */
static void top_channels_dy_f32(kl_model_t *m, const float *dy, float *out, uint32_t n)
{
	uint64_t *score = m->sel;
	uint8_t *taken = (uint8_t *)m->sel + 8u * n;
	for (uint32_t c = 0; c < n; c++) {
		const double v = (double)dy[c];
		const double sq = v * v;
		memcpy(&score[c], &sq, sizeof(sq));
	}
	pick_channels(score, taken, n, upd_count(n, m->upd_frac));
	for (uint32_t c = 0; c < n; c++) {
		out[c] = taken[c] ? dy[c] : 0.0f;
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
static void *kl_upd_scratch(const kl_model_t *m, const kl_tensor_t *x)
{
	if ((const void *)x->grad == m->scratch) {
		const uint32_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
		return (uint8_t *)m->scratch + kl_align8(kl_tsize(x) * es);
	}
	return m->scratch;
}

/* Apply float32 weight gradients gw (bias gb) of an op under the update
 * policy (fused steps and kl_apply_grads). c0/nk: the Paissan block, nk = 0
 * when the op is not channel-sparse. */
static void kl_apply_f32(kl_model_t *m, kl_op_t *op, float *gw, float *gb, int n_b, uint32_t c0,
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
static void kl_update_dense_f32(kl_model_t *m, kl_op_t *op, const float *x, const float *dy,
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
		float *dsel = (float *)(void *)((uint8_t *)m->sel + kl_align8((uint32_t)n_out * 9u));
		top_channels_dy_f32(m, dy, dsel, (uint32_t)n_out);
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
static void kl_active_channels(kl_model_t *m, const kl_op_t *op, kl_geom_t *g, uint32_t es,
			    const void **w, const void **dy, int *n_out, uint32_t *c0,
			    uint32_t *nk)
{
	if (!kl_channel_sparse(m, op)) {
		return;
	}
	kl_active_block(m, kl_n_channels(m, op), c0, nk);
	uint32_t row; /* elements of W per output channel */
	if (op->kind == KL_OP_DENSE) {
		row = kl_tsize(&m->tensors[op->in0]);
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

/* Apply int8 weight gradients (the same for fused steps and
 * kl_apply_grads). */
static void kl_apply_s8(kl_model_t *m, kl_op_t *op, int32_t *gw, int32_t *gb, int n_b, uint32_t c0,
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
							 upd_count(op->n_w, m->upd_frac), m->sel, 0);
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

/* the fused SGD kernel of the op's weight layout */
static void dense_sgd_s8(const kl_op_t *op, int8_t *w, int32_t *b, const int8_t *dy,
			 const kl_tensor_t *x, int32_t lr_q, int w_shift, int b_shift,
			 uint32_t *dither, int n_in, int n_out, void *scratch)
{
#if KL_FC_PAIRED
	if (kl_paired(op)) {
		kl_dsp_fully_connected_sgd_paired_s8(w, b, dy, x->data, x->zp, lr_q, w_shift,
						     b_shift, dither, n_in, n_out, scratch);
		return;
	}
#else
	(void)op;
#endif
	kl_fully_connected_sgd_s8(w, b, dy, x->data, x->zp, lr_q, w_shift, b_shift, dither, n_in,
				  n_out, scratch);
}

/* the fused dense update (no weight gradient stored) */
static void kl_update_dense_s8(kl_model_t *m, kl_op_t *op, const kl_tensor_t *x, const int8_t *dy,
			    int ey, int n_out, uint32_t c0, uint32_t nk)
{
	const int n_in = (int)kl_tsize(x);
	const int w_shift = op->w_exp + KL_LR_FRAC_BITS - ey - x->exp;
	const int b_shift = op->b_exp + KL_LR_FRAC_BITS - ey;
	int8_t *w = op->w;
	int32_t *b = op->b;
	uint32_t touched = op->n_w;
	if (nk != 0u) {
		uint32_t d = m->dither + c0 * (uint32_t)n_in * KL_WEYL;
		kl_fully_connected_sgd_s8(w + c0 * (uint32_t)n_in, b + c0, dy + c0, x->data, x->zp,
					  m->lr_q, w_shift, b_shift, &d, n_in, (int)nk, kl_upd_scratch(m, x));
		m->dither += op->n_w * KL_WEYL;
		touched = nk * (uint32_t)n_in;
	} else if (m->upd_policy == KL_UPDATE_TOPR) {
		touched = kl_topr_sgd_weights_s8(w, NULL, dy, x->data, x->zp, n_out, n_in, m->lr_q,
						 w_shift, &m->dither,
						 upd_count(op->n_w, m->upd_frac), m->sel,
						 kl_paired(op));
		for (int i = 0; i < n_out; i++) {
			if (dy[i] != 0) { /* (a zero step otherwise) */
				b[i] = kl_sat32((int64_t)b[i] -
						kl_rshift_round((int32_t)dy[i] * m->lr_q, b_shift));
			}
		}
	} else if (m->upd_policy == KL_UPDATE_CHANNEL_NORM) {
		int8_t *dsel = (int8_t *)m->sel + kl_align8((uint32_t)n_out * 9u);
		const int8_t *dk = top_channels_dy_s8(m, dy, dsel, (uint32_t)n_out);
		dense_sgd_s8(op, w, b, dk, x, m->lr_q, w_shift, b_shift, &m->dither, n_in, n_out,
			     kl_upd_scratch(m, x));
		touched = upd_count((uint32_t)n_out, m->upd_frac) * (uint32_t)n_in;
	} else {
		dense_sgd_s8(op, w, b, dy, x, m->lr_q, w_shift, b_shift, &m->dither, n_in, n_out,
			     kl_upd_scratch(m, x));
	}
	m->upd_touched += touched;
	m->upd_weights += op->n_w;
}

/* KL_UPDATE_PARTIAL: the backward step of a conv layer whose input or output
 * is partial. Its input keeps channels [cx0, cx0 + kx), its output's
 * gradient exists on [cy0, cy0 + ky): the kernels run on a geometry of kx
 * input and ky output channels, with those weights packed into m->sel; the
 * input gradient is the block's (given packed), the weight gradient that of
 * the weights joining the two blocks, applied where they lie in W (the
 * dither advancing over the whole tensor as in the full update). */
#if defined(__GNUC__)
__attribute__((noinline)) /* kept out of the common backward step */
#endif
static void kl_backward_partial_s8(kl_model_t *m, kl_op_t *op)
{
	kl_tensor_t *y = &m->tensors[op->out];
	const kl_tensor_t *x = &m->tensors[op->in0];
	const int8_t *dy = y->grad;
	const int ey = y->grad_exp;
	kl_geom_t g = kl_geom(m, op);
	const uint32_t c = (uint32_t)g.c, taps = (uint32_t)g.kh * (uint32_t)g.kw;
	const uint32_t pkx = kl_pk(m, x), pky = kl_pk(m, y);
	const uint32_t kx = pkx != 0u ? pkx : c, cx0 = pkx != 0u ? kl_part(m, x)->pc0 : 0u;
	const uint32_t ky = pky != 0u ? pky : (uint32_t)g.co;
	const uint32_t cy0 = pky != 0u ? kl_part(m, y)->pc0 : 0u;
	int8_t *ws = m->sel;
	const int8_t *w = op->w;
	for (uint32_t o = 0; o < ky; o++) {
		for (uint32_t t = 0; t < taps; t++) {
			memcpy(ws + (o * taps + t) * kx, w + ((cy0 + o) * taps + t) * c + cx0, kx);
		}
	}
	g.c = (int)kx;
	g.co = (int)ky;
	if (x->need_grad) {
		op_dx_s8(m, op, &g, ws, dy, (int)ky, ey, 0);
	}
	if (!kl_trainable(op)) {
		return;
	}
	kl_phase(m, KL_PHASE_UPDATE);
	int32_t *gw = kl_upd_scratch(m, x);
	int32_t *gb = gw + ky * taps * kx;
	op_dw_s8(m, op, &g, dy, gw, gb, (int)ky);
	op->gw_exp = (int8_t)(ey + x->exp);
	op->gb_exp = (int8_t)ey;
	const int w_shift = op->w_exp + KL_LR_FRAC_BITS - op->gw_exp;
	const int b_shift = op->b_exp + KL_LR_FRAC_BITS - op->gb_exp;
	int8_t *wt = op->w;
	for (uint32_t o = 0; o < ky; o++) {
		for (uint32_t t = 0; t < taps; t++) {
			const uint32_t j0 = ((cy0 + o) * taps + t) * c + cx0;
			uint32_t d = m->dither + j0 * KL_WEYL;
			kl_sgd_weights_s8(wt + j0, gw + (o * taps + t) * kx, m->lr_q, w_shift, &d,
					  (int)kx);
		}
	}
	m->dither += op->n_w * KL_WEYL;
	kl_sgd_bias_s8((int32_t *)op->b + cy0, gb, m->lr_q, b_shift, (int)ky);
	m->upd_touched += ky * taps * kx;
	m->upd_weights += op->n_w;
}

/* ---- deferred updates: Adam, int8 momentum, batches (issue 20) ---------------------
 * With m->defer, a backward step hands its weight and bias gradients here
 * instead of updating: summed into op->gw/gb over a batch (applied when it is
 * full, their mean), or given to the optimiser step at once (batch 1). */

/* an update begins: Adam's t and its powers of beta */
static void kl_begin_update(kl_model_t *m)
{
	m->n_updates++;
	m->b1t *= m->beta1;
	m->b2t *= m->beta2;
}

/* the optimiser step of op from float32 gradients times scale (1 / batch) */
static void kl_step_f32(kl_model_t *m, kl_op_t *op, float *gw, float *gb, int n_b, float scale)
{
	if (m->optimizer == KL_OPT_ADAM) {
		const float c1 = 1.0f / (1.0f - m->b1t), c2 = 1.0f / (1.0f - m->b2t);
		if (gw != NULL) {
			kl_adam_f32(op->w, op->vw, op->sw, gw, scale, m->lr, m->beta1, m->beta2, c1,
				    c2, m->eps, (int)op->n_w);
		}
		kl_adam_f32(op->b, op->vb, op->sb, gb, scale, m->lr, m->beta1, m->beta2, c1, c2,
			    m->eps, n_b);
	} else {
		if (scale != 1.0f) {
			for (uint32_t k = 0; gw != NULL && k < op->n_w; k++) {
				gw[k] *= scale;
			}
			for (int k = 0; k < n_b; k++) {
				gb[k] *= scale;
			}
		}
		if (gw != NULL) {
			kl_sgd_f32(op->w, op->vw, gw, m->lr, m->momentum, (int)op->n_w);
		}
		kl_sgd_f32(op->b, op->vb, gb, m->lr, m->momentum, n_b);
	}
	if (gw != NULL) {
		m->upd_touched += op->n_w;
		m->upd_weights += op->n_w;
	}
}

/* the optimiser step of op from int32 gradients of exponents ew, eb: SGD,
 * with momentum through the velocity (kl_accumulate_s8) */
static void kl_step_s8(kl_model_t *m, kl_op_t *op, int32_t *gw, int ew, int32_t *gb, int eb,
		       int n_b)
{
	if (m->mom_q != 0) {
		const int first = m->n_updates == 1u; /* the velocity is zero */
		if (gw != NULL) {
			op->v_exp = (int8_t)kl_accumulate_s8(op->vw, first ? ew : op->v_exp, m->mom_q,
							     gw, ew, (int)op->n_w);
			gw = op->vw;
			ew = op->v_exp;
		}
		op->vb_exp = (int8_t)kl_accumulate_s8(op->vb, first ? eb : op->vb_exp, m->mom_q, gb,
						      eb, n_b);
		gb = op->vb;
		eb = op->vb_exp;
	}
	if (gw != NULL) {
		kl_sgd_weights_s8(op->w, gw, m->lr_q, op->w_exp + KL_LR_FRAC_BITS - ew, &m->dither,
				  (int)op->n_w);
		m->upd_touched += op->n_w;
		m->upd_weights += op->n_w;
	}
	kl_sgd_bias_s8(op->b, gb, m->lr_q, op->b_exp + KL_LR_FRAC_BITS - eb, n_b);
}

static void kl_defer_f32(kl_model_t *m, kl_op_t *op, float *gw, float *gb, int n_b)
{
	if (m->batch <= 1u) {
		kl_step_f32(m, op, gw, gb, n_b, 1.0f);
		return;
	}
	float *aw = op->gw, *ab = op->gb;
	const int first = m->batch_n == 0u;
	for (uint32_t k = 0; gw != NULL && k < op->n_w; k++) {
		aw[k] = first ? gw[k] : aw[k] + gw[k];
	}
	for (int k = 0; k < n_b; k++) {
		ab[k] = first ? gb[k] : ab[k] + gb[k];
	}
}

static void kl_defer_s8(kl_model_t *m, kl_op_t *op, int32_t *gw, int ew, int32_t *gb, int eb,
			int n_b)
{
	if (m->batch <= 1u) {
		kl_step_s8(m, op, gw, ew, gb, eb, n_b);
		return;
	}
	const int first = m->batch_n == 0u;
	const int32_t mu = first ? 0 : (int32_t)1 << KL_MOM_FRAC_BITS;
	if (gw != NULL) {
		op->gw_exp = (int8_t)kl_accumulate_s8(op->gw, first ? ew : op->gw_exp, mu, gw, ew,
						      (int)op->n_w);
	}
	op->gb_exp = (int8_t)kl_accumulate_s8(op->gb, first ? eb : op->gb_exp, mu, gb, eb, n_b);
}

/* the end of a sample of a batch: when it is full, the mean of its summed
 * gradients to the optimiser, last op first (the order of the dither) */
static void kl_batch_done(kl_model_t *m)
{
	if (m->batch <= 1u || ++m->batch_n < m->batch) {
		return;
	}
	m->batch_n = 0;
	kl_begin_update(m);
	int lg = 0;
	while ((1u << lg) < m->batch) {
		lg++;
	}
	for (int i = m->n_ops - 1; i >= 0; i--) {
		kl_op_t *op = &m->ops[i];
		if (!kl_trainable(op) || op->n_w == 0u) {
			continue;
		}
		const int n_b = (int)kl_n_channels(m, op);
		void *gw = kl_bias_only(op) ? NULL : op->gw;
		if (m->dtype == KL_DTYPE_F32) {
			kl_step_f32(m, op, gw, op->gb, n_b, 1.0f / (float)m->batch);
		} else { /* the mean: a power-of-two batch, its exponent */
			kl_step_s8(m, op, gw, op->gw_exp - lg, op->gb, op->gb_exp - lg, n_b);
		}
	}
}
