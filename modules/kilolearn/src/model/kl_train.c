/* Training steps: the schedule executor (blob 2.1), delayed activation
 * scaling, and the public step calls. */
/* A part of kl_model.c's translation unit (included there, not compiled alone). */
/* Execute the blob's schedule (checked by kl_blob_check: every step reads
 * only live buffers inside the region). label < 0: forward steps up to the
 * loss only (prediction). Returns the predicted class. */
static int kl_run_schedule(kl_model_t *m, int label, int keep)
{
	int pred = 0;
	const uint8_t *sp = m->sched;
	for (uint32_t k = 0; k < m->n_steps; k++, sp += KL_STEP_SIZE) {
		const int idx = kl_rd16(sp + KL_SS_INDEX);
		uint8_t *at = m->region + kl_rd32(sp + KL_SS_OFFSET);
		switch (sp[KL_SS_KIND]) {
		case KL_STEP_FWD:
			kl_phase(m, KL_PHASE_FORWARD);
			m->tensors[m->ops[idx].out].data = at;
			kl_forward_op(m, &m->ops[idx]);
			break;
		case KL_STEP_LOSS:
			pred = kl_predicted(m);
			if (label < 0) {
				return pred;
			}
			m->tensors[idx].grad = at;
			kl_loss(m, label);
			break;
		case KL_STEP_GRAD:
			m->tensors[idx].grad = at;
			m->tensors[idx].has_grad = 0;
			break;
		case KL_STEP_BWD: {
			void *const fwd_scratch = m->scratch;
			m->scratch = at; /* this step's int32 scratch, planned */
			kl_backward_op(m, &m->ops[idx], keep,
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
static void kl_adapt_ranges(kl_model_t *m)
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
		return kl_run_schedule(m, label, keep);
	}
	m->fwd_pack = 1u;
	const int pred = kl_forward_ops(m, 0);
	m->fwd_pack = 0u;
	kl_backward(m, label, keep);
	return pred;
}

static int check_step(const kl_model_t *m, const void *x, int label)
{
	if (m == NULL || !kl_sample_ok(m, x) || label < 0 || label >= m->n_classes ||
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
	void *own = kl_pk(m, cut) == 0u	      ? cut->data
		    : kl_part(m, cut)->full != NULL ? kl_part(m, cut)->full
						    : kl_part(m, cut)->kept;
	cut->data = own; /* a partial cut arrives whole */
	if (t == m->input) {
		cut->data = (void *)(uintptr_t)data;
	} else {
		memcpy(own, data, kl_tsize(cut) * (m->dtype == KL_DTYPE_S8 ? 1u : 4u));
	}
	m->fwd_pack = 1u;
	const int pred = kl_forward_ops(m, cut->producer + 1);
	m->fwd_pack = 0u;
	kl_backward(m, label, 0);
	if (m->paged && m->pg_err != KL_OK) {
		return m->pg_err;
	}
	kl_adapt_ranges(m);
	if (m->paged && (m->pg_err = pg_commit(m)) != KL_OK) {
		return m->pg_err;
	}
	m->upd_step++;
	kl_phase(m, KL_PHASE_DONE);
	return pred;
}

int kl_train_step(kl_model_t *m, const void *x, int label)
{
	int err = check_step(m, x, label);
	if (err != KL_OK) {
		return err;
	}
	const int pred = run_step(m, x, label, 0);
	if (m->paged && m->pg_err != KL_OK) {
		return m->pg_err; /* rows of this step may be written; a mount drops them */
	}
	kl_adapt_ranges(m);
	if (m->paged && (m->pg_err = pg_commit(m)) != KL_OK) {
		return m->pg_err; /* the step stays uncommitted: a mount drops it */
	}
	m->upd_step++;
	kl_phase(m, KL_PHASE_DONE);
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
		if (!kl_trainable(op) || op->gb == NULL) {
			continue;
		}
		const int n_b = (int)kl_n_channels(m, op);
		uint32_t c0 = 0, nk = 0;
		if (kl_channel_sparse(m, op)) { /* the block kl_compute_grads used */
			kl_active_block(m, (uint32_t)n_b, &c0, &nk);
		}
		if (m->dtype == KL_DTYPE_F32) {
			if (op->gw != NULL) {
				kl_apply_f32(m, op, op->gw, op->gb, n_b, c0, nk);
			} else {
				kl_sgd_f32(op->b, op->vb, op->gb, m->lr, m->momentum, n_b);
			}
		} else {
			if (op->gw != NULL) {
				kl_apply_s8(m, op, op->gw, op->gb, n_b, c0, nk);
			} else {
				kl_sgd_bias_s8(op->b, op->gb, m->lr_q,
					       op->b_exp + KL_LR_FRAC_BITS - op->gb_exp, n_b);
			}
		}
	}
	kl_adapt_ranges(m);
	m->upd_step++;
	return KL_OK;
}

