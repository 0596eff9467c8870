/* The model laid out in the arena from a checked blob: tensors, ops,
 * trainable weights copied in (frozen ones read in place), activation and
 * gradient buffers or the schedule's region, scratch. */
/* A part of kl_model.c's translation unit (included there, not compiled alone). */
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

/* Bytes of scratch an op needs: forward (dense s8 kernel scratch) and, for
 * training, the input-gradient accumulators (only when the input needs a
 * gradient) and the update's weight and bias gradients. in_place: the
 * schedule put the int8 input gradient at the start or the end of this
 * scratch (KL_STEP_IN_PLACE); the update's part then lies after it (start)
 * or before it (end). Mirrored by kl_blob.c and planner.MemModel._op_scratch. */
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
/* The CMSIS-NN parameter blocks (kl_kernels.h): a pointer per op, then a
 * block per int8 dense (not paged), conv and depthwise op, in op order
 * (planner/memory.py MemModel, cmsis_nn). */
static int kl_cmsis_blocks(kl_model_t *m, kl_arena_t *arena)
{
	m->cmsis = kl_arena_alloc(arena, sizeof(m->cmsis[0]) * m->n_ops, sizeof(m->cmsis[0]));
	if (m->cmsis == NULL) {
		return -1;
	}
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		const int kind = op->kind == KL_OP_DENSE ? KL_CMSIS_FC
				 : op->kind == KL_OP_CONV ? KL_CMSIS_CONV
							  : KL_CMSIS_DW;
		m->cmsis[i] = NULL;
		if (op->n_w == 0u || kl_paged_op(op) ||
		    (op->kind != KL_OP_DENSE && op->kind != KL_OP_CONV && op->kind != KL_OP_DWCONV)) {
			continue;
		}
		const kl_tensor_t *y = &m->tensors[op->out];
		const uint32_t n = kind == KL_CMSIS_FC ? kl_tsize(y) : y->c;
		if (n > (UINT32_MAX - 4u * KL_CMSIS_PREP_HEADER) / 12u) {
			return -1;
		}
		m->cmsis[i] = kl_arena_alloc(arena, KL_CMSIS_PREP_BYTES(n, kind != KL_CMSIS_FC), 4u);
		if (m->cmsis[i] == NULL) {
			return -1;
		}
		if (kind == KL_CMSIS_FC) {
			kl_cmsis_prep_init(m->cmsis[i], kind, NULL);
		} else {
			const kl_geom_t g = kl_geom(m, op);
			kl_cmsis_prep_init(m->cmsis[i], kind, &g);
		}
	}
	return 0;
}
#endif

static uint32_t op_scratch(const kl_model_t *m, const kl_op_t *op, int training, int in_place)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	const kl_tensor_t *y = &m->tensors[op->out];
	const int s8_dense = op->kind == KL_OP_DENSE && m->dtype == KL_DTYPE_S8;
	uint32_t need = s8_dense ? KL_FC_S8_SCRATCH(kl_tsize(x), kl_tsize(y)) : 0u;
	if (training) {
		if (kl_need_dx(m, op)) { /* input-gradient accumulators (partial: the block) */
			need = kl_umax(need, kl_lsize(m, x) * 4u);
		}
		uint32_t upd = 0;
		if (kl_trainable(op) && op->n_w != 0u) {
			const uint32_t n_b = op->kind == KL_OP_DENSE ? kl_tsize(y) : y->c;
			if (kl_bias_only(op)) {
				upd = n_b * 4u;
			} else if (m->part_pm != 0u && op->kind == KL_OP_CONV) {
				/* the weights joining the two blocks (KL_UPDATE_PARTIAL) */
				const uint32_t kx = kl_pk(m, x) != 0u ? kl_pk(m, x) : x->c;
				const uint32_t ky = kl_pk(m, y) != 0u ? kl_pk(m, y) : y->c;
				upd = (ky * op->kh * op->kw * kx + ky) * 4u;
			} else if (op->kind == KL_OP_CONV || op->kind == KL_OP_DWCONV) {
				upd = (op->n_w + n_b) * 4u; /* weight gradients */
			} else if (m->defer) { /* dense: weight gradients, then the optimiser */
				upd = (op->n_w + n_b) * 4u;
			} else if (s8_dense) { /* fused SGD (paged: a chunk of a row at a time) */
				upd = kl_paged_op(op) ? KL_FC_S8_SCRATCH(PG_CHUNK, 1u)
						      : KL_FC_SGD_S8_SCRATCH(kl_tsize(x), kl_tsize(y));
			}
		}
		const uint32_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
		need = kl_umax(need, (in_place ? kl_align8(kl_tsize(x) * es) : 0u) + upd);
	}
	return need;
}

/* Does op keep its weights in the paired layout (docs/kernels.md)? A trained
 * int8 dense layer in the arena whose kernels all have a paired variant under
 * the update policy (all weights, channel-norm's rows, top-r's steps), n_in % 4 == 0, at
 * least two rows, no weight at -128 (the paired SGD relies on the symmetric
 * range) and the scratch to convert a pair of rows through. */
static int kl_pair_ok(const kl_model_t *m, const kl_op_t *op)
{
	if (!KL_FC_PAIRED || m->dtype != KL_DTYPE_S8 || op->kind != KL_OP_DENSE ||
	    !kl_trainable(op) || kl_bias_only(op) || kl_paged_op(op) || op->n_w == 0u ||
	    (m->flags & KL_CFG_KEEP_GRADS) || m->defer /* Adam, momentum, batches: plain */ ||
	    (m->upd_policy != KL_UPDATE_ALL && m->upd_policy != KL_UPDATE_CHANNEL_NORM &&
	     m->upd_policy != KL_UPDATE_TOPR)) {
		return 0;
	}
	const uint32_t n_in = kl_tsize(&m->tensors[op->in0]), n_out = kl_tsize(&m->tensors[op->out]);
	/* n_in <= 256: where the paired forward kernel takes its fast path (its
	 * sums stay below 2^23); wider layers run faster in the plain layout */
	if ((n_in & 3u) != 0u || n_in > 256u || n_out < 2u || ((uintptr_t)op->w & 3u) != 0u ||
	    m->scratch_size < 2u * n_in) {
		return 0;
	}
	const int8_t *w = op->w;
	for (uint32_t k = 0; k < op->n_w && !kl_paired(op); k++) { /* (paired: never -128) */
		if (w[k] == -128) {
			return 0;
		}
	}
	return 1;
}

/* In-place transpose of an r x c matrix of 8-byte chunks (row-major in, row-
 * major c x r out): chunk i goes to i r mod (n - 1), one cycle at a time from
 * its smallest index (O(n^2) at worst; n <= 192 chunks where it is used) */
static void kl_chunk_transpose(uint8_t *a, uint32_t r, uint32_t c)
{
	const uint32_t n = r * c;
	for (uint32_t s = 1; n > 2u && s < n - 1u; s++) {
		uint32_t i = (s * r) % (n - 1u);
		while (i > s) {
			i = (i * r) % (n - 1u);
		}
		if (i < s) {
			continue; /* not the cycle's leader */
		}
		uint8_t t[8];
		memcpy(t, a + 8u * s, 8u);
		for (uint32_t cur = s;;) {
			const uint32_t src = (cur * c) % (n - 1u);
			if (src == s) {
				memcpy(a + 8u * cur, t, 8u);
				break;
			}
			memcpy(a + 8u * cur, a + 8u * src, 8u);
			cur = src;
		}
	}
}

/* Each dense op's weights into the layout kl_pair_ok asks for, in place, a
 * pair of rows at a time through the scratch, then the 8-byte groups of
 * three pairs interleaved (kl_fc_triples) by an in-place transpose (at load,
 * and when the update policy changes: never per step). */
static void kl_pair_ops(kl_model_t *m)
{
	for (int i = 0; i < m->n_ops; i++) {
		kl_op_t *op = &m->ops[i];
		const int want = kl_pair_ok(m, op);
		if (want == kl_paired(op)) {
			continue;
		}
		const int n_in = (int)kl_tsize(&m->tensors[op->in0]);
		const int n_out = (int)kl_tsize(&m->tensors[op->out]);
		int8_t *w = op->w, *t = m->scratch;
		const int nt = kl_fc_triples(n_in) ? n_out / 6 : 0;
		const uint32_t mg = (uint32_t)n_in / 4u; /* groups of four inputs */
		for (int k = 0; k < nt && !want; k++) { /* three pairs' groups apart */
			kl_chunk_transpose((uint8_t *)w + (long)k * 6 * n_in, mg, 3u);
		}
		for (int p = 0; p < n_out / 2; p++) {
			int8_t *blk = w + (long)p * 2 * n_in;
			memcpy(t, blk, 2u * (uint32_t)n_in);
			if (want) {
				kl_fc_pair_s8(t, blk, n_in, 2);
			} else {
				kl_fc_unpair_s8(t, blk, n_in, 2);
			}
		}
		for (int k = 0; k < nt && want; k++) { /* three pairs' groups interleaved */
			kl_chunk_transpose((uint8_t *)w + (long)k * 6 * n_in, 3u, mg);
		}
		op->flags = (uint8_t)(want ? op->flags | KL_OP_PAIRED : op->flags & ~KL_OP_PAIRED);
	}
}

int kl_model_op_weights(const kl_model_t *m, int i, uint32_t off, void *buf, uint32_t n)
{
	if (m == NULL || m->ops == NULL || i < 0 || i >= m->n_ops || (buf == NULL && n != 0u)) {
		return KL_EINVAL;
	}
	const kl_op_t *op = &m->ops[i];
	const uint32_t size = op->n_w * (m->dtype == KL_DTYPE_S8 ? 1u : 4u);
	if (off > size || n > size - off) {
		return KL_EINVAL;
	}
	if (!kl_paired(op)) {
		memcpy(buf, (const uint8_t *)op->w + off, n);
		return KL_OK;
	}
	const uint32_t n_in = kl_tsize(&m->tensors[op->in0]), n_out = kl_tsize(&m->tensors[op->out]);
	int8_t *o = buf;
	for (uint32_t k = 0; k < n; k++) {
		const uint32_t e = off + k;
		o[k] = kl_fc_paired_get(op->w, e / n_in, e % n_in, n_in, n_out);
	}
	return KL_OK;
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
	m->blob = blob;
	m->blob_len = kl_rd32(blob + KL_BH_TOTAL_SIZE);
	m->dtype = blob[KL_BH_DTYPE];
	m->n_tensors = kl_rd16(blob + KL_BH_N_TENSORS);
	m->n_ops = kl_rd16(blob + KL_BH_N_OPS);
	m->input = kl_rd16(blob + KL_BH_INPUT);
	m->output = kl_rd16(blob + KL_BH_OUTPUT);
	m->lut_exp = (int8_t)blob[KL_BH_LUT_EXP];
	m->loss = (uint8_t)kl_blob_loss(blob);
	m->target = NULL;
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
		const uint32_t batch = cfg->batch == 0u ? 1u : cfg->batch;
		if (cfg->optimizer > KL_OPT_ADAM || (s8 && (batch & (batch - 1u)) != 0u) ||
		    (batch > 1u && (cfg->flags & KL_CFG_KEEP_GRADS)) ||
		    !(cfg->beta1 >= 0.0f && cfg->beta1 < 1.0f) ||
		    !(cfg->beta2 >= 0.0f && cfg->beta2 < 1.0f) || !(cfg->eps >= 0.0f)) {
			return KL_EINVAL;
		}
		if (s8 && cfg->optimizer == KL_OPT_ADAM) {
			return KL_ENOTSUP; /* Adam trains float32 */
		}
		m->optimizer = cfg->optimizer;
		m->batch = (uint16_t)batch;
		m->defer = (uint8_t)(batch > 1u || cfg->optimizer == KL_OPT_ADAM ||
				     (s8 && cfg->momentum != 0.0f));
		m->mom_q = (int32_t)(cfg->momentum * (float)(1 << KL_MOM_FRAC_BITS) + 0.5f);
		m->beta1 = cfg->beta1 != 0.0f ? cfg->beta1 : 0.9f;
		m->beta2 = cfg->beta2 != 0.0f ? cfg->beta2 : 0.999f;
		m->eps = cfg->eps != 0.0f ? cfg->eps : 1e-8f;
		m->b1t = 1.0f;
		m->b2t = 1.0f;
		if (m->defer && (sched_off != 0u || kl_blob_update_policy(blob, &(uint32_t){0}) !=
							  KL_UPDATE_ALL)) {
			return KL_ENOTSUP; /* deferred updates: store-all, every weight */
		}
		m->lr = cfg->lr;
		m->momentum = cfg->momentum;
		m->lr_q = (int32_t)(cfg->lr * (float)(1 << KL_LR_FRAC_BITS) + 0.5f);
		m->dither = cfg->seed;
		m->seed = cfg->seed;
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
		op->flags = training ? r[KL_BO_FLAGS] : (uint8_t)(r[KL_BO_FLAGS] & KL_OP_PAGED);
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
		/* backprop needs a tensor's gradient when a kl_trainable op is at or before it */
		y->need_grad = (uint8_t)(kl_trainable(op) || m->tensors[op->in0].need_grad ||
					 (op->kind == KL_OP_ADD && m->tensors[op->in1].need_grad));
		op->n_w = kl_rd32(r + KL_BO_W_SIZE) / (uint32_t)es;
		if (op->n_w == 0u) {
			continue;
		}
		const uint8_t *w = blob + kl_rd32(r + KL_BO_W_OFF);
		const uint8_t *b = blob + kl_rd32(r + KL_BO_B_OFF);
		const size_t bsize = kl_rd32(r + KL_BO_B_SIZE);
		if (op->flags & KL_OP_PAGED) { /* read in place, rows from the log */
			if (sched_off != 0u || (training && (m->momentum != 0.0f || m->defer ||
							      (m->flags & KL_CFG_KEEP_GRADS)))) {
				return KL_ENOTSUP;
			}
			op->w = (void *)(uintptr_t)w;
			op->b = (void *)(uintptr_t)b;
			/* pointers: aligned as pointers (8 bytes on a 64-bit host) */
			op->rows = kl_arena_alloc(arena, sizeof(op->rows[0]) * kl_tsize(y),
						  sizeof(op->rows[0]));
			if (op->rows == NULL) {
				return KL_ENOMEM;
			}
			memset(op->rows, 0, sizeof(op->rows[0]) * kl_tsize(y));
			m->paged = 1u;
			continue;
		}
		if (kl_trainable(op)) {
			const int wt = !kl_bias_only(op); /* the weights train too */
			op->w = wt ? arena_copy(arena, w, op->n_w * es) : (void *)(uintptr_t)w;
			op->b = arena_copy(arena, b, bsize);
			if (op->w == NULL || op->b == NULL) {
				return KL_ENOMEM;
			}
			/* momentum (f32: float, s8: int32 velocity) or Adam's moments */
			if (m->momentum != 0.0f || m->optimizer == KL_OPT_ADAM) {
				op->vw = wt ? arena_zeros(arena, op->n_w * 4u) : NULL;
				op->vb = arena_zeros(arena, bsize);
				if ((wt && op->vw == NULL) || op->vb == NULL) {
					return KL_ENOMEM;
				}
			}
			if (m->optimizer == KL_OPT_ADAM) {
				op->sw = wt ? arena_zeros(arena, op->n_w * 4u) : NULL;
				op->sb = arena_zeros(arena, bsize);
				if ((wt && op->sw == NULL) || op->sb == NULL) {
					return KL_ENOMEM;
				}
			}
			if ((m->flags & KL_CFG_KEEP_GRADS) || m->batch > 1u) { /* kept or summed */
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
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
	if (s8 && kl_cmsis_blocks(m, arena) != 0) {
		return KL_ENOMEM;
	}
#endif
	m->n_inputs = (uint16_t)kl_tsize(&m->tensors[m->input]);
	m->n_classes = (uint16_t)kl_tsize(&m->tensors[m->output]);
	uint32_t permille = 0;
	const int policy = kl_blob_update_policy(blob, &permille);
	void *slot[2] = {NULL, NULL};
	if (training && sched_off == 0u && policy == KL_UPDATE_PARTIAL && s8 &&
	    !(m->flags & KL_CFG_KEEP_GRADS)) {
		/* Paissan's partial activations laid out: a partial tensor keeps its
		 * block (data and gradient); it is written whole into one of two
		 * slots, by its producer's parity (its consumer comes right after) */
		m->part_pm = (uint16_t)permille;
		m->part = kl_arena_alloc(arena, sizeof(kl_part_t) * m->n_tensors, 8u);
		if (m->part == NULL) {
			return KL_ENOMEM;
		}
		memset(m->part, 0, sizeof(kl_part_t) * m->n_tensors);
		uint32_t slot_size[2] = {0u, 0u};
		for (int k = 0; k < m->n_tensors; k++) {
			kl_tensor_t *t = &m->tensors[k];
			if (kl_partial_user(m, k) >= 0) {
				m->part[k].pk = (uint16_t)upd_count(t->c, permille);
				const int p = t->producer & 1;
				slot_size[p] = kl_umax(slot_size[p], kl_tsize(t));
			}
		}
		for (int p = 0; p < 2; p++) {
			if (slot_size[p] != 0u &&
			    (slot[p] = kl_arena_alloc(arena, slot_size[p], 4u)) == NULL) {
				return KL_ENOMEM;
			}
		}
	}
	uint32_t scratch = s8 ? m->n_classes * 4u : 0u;
	for (int k = 0; k < m->n_tensors && sched_off == 0u; k++) {
		kl_tensor_t *t = &m->tensors[k];
		if (k != m->input) {
			t->data = kl_arena_alloc(arena, kl_lsize(m, t) * es, 4u);
			if (t->data == NULL) {
				return KL_ENOMEM;
			}
			if (kl_pk(m, t) != 0u) {
				m->part[k].kept = t->data;
				m->part[k].full = slot[t->producer & 1];
			}
		}
		if (training && (t->need_grad || k == m->output)) {
			t->grad = kl_arena_alloc(arena, kl_lsize(m, t) * es, 4u);
			if (t->grad == NULL) {
				return KL_ENOMEM;
			}
		}
	}
	uint32_t kscratch = 4u;
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		/* with a schedule each backward step gets its scratch in the region */
		scratch = kl_umax(scratch, op_scratch(m, op, training && sched_off == 0u, 0));
		if (s8 && (op->kind == KL_OP_CONV || op->kind == KL_OP_DWCONV)) {
			const kl_geom_t g = kl_geom(m, op);
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
			/* the kernels on the parameter blocks: CMSIS-NN's buffer */
			kscratch = kl_umax(kscratch, kl_cmsis_conv_prep_s8_scratch(&g));
#else
			kscratch = kl_umax(kscratch, KL_CONV_S8_SCRATCH(&g));
#endif
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
		m->sched = blob + sched_off + kl_sched_header_size(blob);
		/* 2.7: split at region_split (kl_blob_check: 8-aligned, below the size) */
		m->region_split = kl_sched_header_size(blob) > KL_SCHED_HEADER_SIZE
					  ? kl_rd32(blob + sched_off + KL_SCHED_SPLIT)
					  : 0u;
		/* in the arena's second memory region where it has one: all of it, or
		 * the first part, the second part in the arena after the static part
		 * (without a second memory region right after the first: one block) */
		const uint32_t lo = m->region_split != 0u ? m->region_split : m->region_size;
		m->region = kl_arena_alloc_far(arena, lo, 8u);
		m->region_hi = m->region_split != 0u
				       ? kl_arena_alloc(arena, m->region_size - lo, 8u)
				       : m->region;
		if (m->region == NULL || m->region_hi == NULL) {
			return KL_ENOMEM;
		}
	}
	m->upd_frac = KL_UPDATE_FRAC_ONE;
	kl_pair_ops(m);
	if (training && policy != KL_UPDATE_ALL) {
		return kl_model_set_update_policy(m, policy, permille);
	}
	return KL_OK;
}
