/* The forward pass: each op through the op table (kl_ops.c); predictions. */
/* A part of kl_model.c's translation unit (included there, not compiled alone). */
static void kl_forward_op(kl_model_t *m, kl_op_t *op)
{
	kl_tensor_t *y = &m->tensors[op->out];
	if (m->dtype == KL_DTYPE_F32 && op->kind == KL_OP_DENSE && op->act <= KL_ACT_RELU6 &&
	    !kl_paged_op(op)) { /* the plain dense layer: no geometry */
		dense_fwd_f32(m, op, NULL);
		return;
	}
	kl_geom_t g; /* dense layers read no geometry */
	if (op->kind != KL_OP_DENSE) {
		g = kl_geom(m, op);
	}
	if (m->dtype == KL_DTYPE_F32) {
		if (kl_paged_op(op)) {
			(void)pg_forward(m, op, NULL);
		} else {
			op_fwd_f32(m, op, &g);
		}
		if (op->act > KL_ACT_RELU6) {
			kl_activation_f32(y->data, (int)kl_tsize(y), op->act);
		}
		return;
	}
	const kl_tensor_t *x = &m->tensors[op->in0];
	/* sigmoid and tanh: the kernel writes a pre-activation of a fixed scale */
	const int table = op->act == KL_ACT_SIGMOID || op->act == KL_ACT_TANH;
	const int pre_exp = op->act == KL_ACT_SIGMOID ? KL_SIGMOID_PRE_EXP : KL_TANH_PRE_EXP;
	kl_requant_t rq;
	kl_requant_init(&rq, x->exp + op->w_exp, op->b_exp, table ? pre_exp : y->exp,
			table ? 0 : y->zp, kl_kernel_act(op->act));
	op->sat = (uint8_t)(kl_paged_op(op) ? pg_forward(m, op, &rq) : op_fwd_s8(m, op, &g, &rq));
	if (op->act > KL_ACT_RELU6) {
		kl_activation_s8(y->data, (int)kl_tsize(y), op->act, y->zp);
		if (table) {
			op->sat = 0; /* a fixed scale: the table saturates by itself */
		}
	}
}

static int kl_predicted(const kl_model_t *m)
{
	const kl_tensor_t *out = &m->tensors[m->output];
	if (m->n_classes == 1u) { /* one sigmoid output (binary): its sign */
		return m->dtype == KL_DTYPE_F32 ? *(const float *)out->data > 0.0f
						: *(const int8_t *)out->data > out->zp;
	}
	return m->dtype == KL_DTYPE_F32 ? kl_argmax_f32(out->data, m->n_classes, m->class_mask)
					: kl_argmax_s8(out->data, m->n_classes, m->class_mask);
}

/* run ops [first, n_ops) and return the predicted class; training: the forward
 * pass of a step, which keeps only the blocks of partial tensors */
static int kl_forward_ops(kl_model_t *m, int first, int training)
{
	kl_phase(m, KL_PHASE_FORWARD);
	if (m->part == NULL) { /* no partial activations (KL_UPDATE_PARTIAL) */
		for (int i = first; i < m->n_ops; i++) {
			kl_forward_op(m, &m->ops[i]);
		}
		return kl_predicted(m);
	}
	for (int i = first; i < m->n_ops; i++) {
		kl_op_t *op = &m->ops[i];
		kl_tensor_t *y = &m->tensors[op->out];
		if (kl_pk(m, y) != 0u && kl_part(m, y)->full != NULL) { /* partial: whole, */
			y->data = kl_part(m, y)->full;                 /* to a slot */
		}
		kl_forward_op(m, op);
		kl_tensor_t *x = &m->tensors[op->in0];
		if (training && kl_pk(m, x) != 0u) { /* its consumer ran: keep the block */
			kl_pack_partial(m, x);
		}
	}
	return kl_predicted(m);
}

static int forward(kl_model_t *m, const void *x)
{
	if (m == NULL || !kl_sample_ok(m, x)) {
		return KL_EINVAL;
	}
	m->tensors[m->input].data = (void *)(uintptr_t)x;
	return m->sched != NULL ? kl_run_schedule(m, -1, 0) : kl_forward_ops(m, 0, 0);
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
