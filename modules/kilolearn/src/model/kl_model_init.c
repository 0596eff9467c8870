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
static uint32_t op_scratch(const kl_model_t *m, const kl_op_t *op, int training, int in_place)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	const kl_tensor_t *y = &m->tensors[op->out];
	const int s8_dense = op->kind == KL_OP_DENSE && m->dtype == KL_DTYPE_S8;
	uint32_t need = s8_dense ? KL_FC_S8_SCRATCH(kl_tsize(x), kl_tsize(y)) : 0u;
	if (training) {
		if (kl_need_dx(m, op)) {
			need = kl_umax(need, kl_tsize(x) * 4u); /* input-gradient accumulators */
		}
		uint32_t upd = 0;
		if (kl_trainable(op) && op->n_w != 0u) {
			const uint32_t n_b = op->kind == KL_OP_DENSE ? kl_tsize(y) : y->c;
			if (kl_bias_only(op)) {
				upd = n_b * 4u;
			} else if (op->kind == KL_OP_CONV || op->kind == KL_OP_DWCONV) {
				upd = (op->n_w + n_b) * 4u; /* weight gradients */
			} else if (s8_dense) { /* fused SGD (paged: a chunk of a row at a time) */
				upd = kl_paged_op(op) ? KL_FC_S8_SCRATCH(PG_CHUNK, 1u)
						      : KL_FC_S8_SCRATCH(kl_tsize(x), kl_tsize(y));
			}
		}
		const uint32_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
		need = kl_umax(need, (in_place ? kl_align8(kl_tsize(x) * es) : 0u) + upd);
	}
	return need;
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
			if (sched_off != 0u || (training && (m->momentum != 0.0f ||
							      (m->flags & KL_CFG_KEEP_GRADS)))) {
				return KL_ENOTSUP;
			}
			op->w = (void *)(uintptr_t)w;
			op->b = (void *)(uintptr_t)b;
			op->rows = arena_zeros(arena, sizeof(op->rows[0]) * kl_tsize(y));
			if (op->rows == NULL) {
				return KL_ENOMEM;
			}
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
	m->n_inputs = (uint16_t)kl_tsize(&m->tensors[m->input]);
	m->n_classes = (uint16_t)kl_tsize(&m->tensors[m->output]);
	uint32_t scratch = s8 ? m->n_classes * 4u : 0u;
	for (int k = 0; k < m->n_tensors && sched_off == 0u; k++) {
		kl_tensor_t *t = &m->tensors[k];
		if (k != m->input) {
			t->data = kl_arena_alloc(arena, kl_tsize(t) * es, 4u);
			if (t->data == NULL) {
				return KL_ENOMEM;
			}
		}
		if (training && (t->need_grad || k == m->output)) {
			t->grad = kl_arena_alloc(arena, kl_tsize(t) * es, 4u);
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
			kscratch = kl_umax(kscratch, KL_CONV_S8_SCRATCH(&g));
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
		/* in the arena's second memory region where it has one */
		m->region = kl_arena_alloc_far(arena, m->region_size, 8u);
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
