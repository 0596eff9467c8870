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
		const uint32_t off = kl_rd32(sp + KL_SS_OFFSET);
		/* a buffer lies in one part of a split region (kl_blob_check) */
		uint8_t *at = m->region_split != 0u && off >= m->region_split
				      ? m->region_hi + (off - m->region_split)
				      : m->region + off;
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
	const int pred = kl_forward_ops(m, 0, 1);
	kl_backward(m, label, keep);
	return pred;
}

static int check_step(const kl_model_t *m, const void *x, int label)
{
	if (m == NULL || !kl_sample_ok(m, x) ||
	    (m->sched == NULL && m->tensors[m->output].grad == NULL)) {
		return KL_EINVAL;
	}
	if (m->loss == KL_LOSS_MSE) { /* the label is not used */
		return KL_OK;
	}
	const int n_lab = m->loss == KL_LOSS_SIGMOID_BCE && m->n_classes == 1 ? 2 : m->n_classes;
	return label < 0 || label >= n_lab ? KL_EINVAL : KL_OK;
}

/* the step's target: the caller's, else the input (MSE: an autoencoder) */
static int set_target(kl_model_t *m, const void *x, const void *target)
{
	if (m->loss == KL_LOSS_MSE && target == NULL) {
		if (m->n_inputs != m->n_classes) {
			return KL_EINVAL;
		}
		target = x;
	}
	if (target != NULL && !kl_sample_ok(m, target)) {
		return KL_EINVAL;
	}
	m->target = target;
	return KL_OK;
}

int kl_train_step_from(kl_model_t *m, int t, const void *data, int label)
{
	int err = check_step(m, data, label);
	if (err == KL_OK && (m->sched != NULL || m->loss != KL_LOSS_SOFTMAX_CE)) {
		err = KL_ENOTSUP; /* the schedule runs whole steps; targets need the input */
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
	if (m->defer && m->batch <= 1u) {
		kl_begin_update(m);
	}
	const int pred = kl_forward_ops(m, cut->producer + 1, 1);
	kl_backward(m, label, 0);
	if (m->paged && m->pg_err != KL_OK) {
		return m->pg_err;
	}
	kl_batch_done(m);
	kl_adapt_ranges(m);
	if (m->paged && (m->pg_err = pg_commit(m)) != KL_OK) {
		return m->pg_err;
	}
	m->upd_step++;
	kl_phase(m, KL_PHASE_DONE);
	return pred;
}

static int train_step(kl_model_t *m, const void *x, int label, const void *target)
{
	int err = check_step(m, x, label);
	if (err == KL_OK) {
		err = set_target(m, x, target);
	}
	if (err != KL_OK) {
		return err;
	}
	if (m->defer && m->batch <= 1u) {
		kl_begin_update(m);
	}
	const int pred = run_step(m, x, label, 0);
	if (m->paged && m->pg_err != KL_OK) {
		return m->pg_err; /* rows of this step may be written; a mount drops them */
	}
	kl_batch_done(m); /* a batch's update when it is full */
	kl_adapt_ranges(m);
	if (m->paged && (m->pg_err = pg_commit(m)) != KL_OK) {
		return m->pg_err; /* the step stays uncommitted: a mount drops it */
	}
	m->upd_step++;
	kl_phase(m, KL_PHASE_DONE);
	return pred;
}

int kl_train_step(kl_model_t *m, const void *x, int label)
{
	if (m != NULL && m->loss == KL_LOSS_MSE) {
		label = 0;
	}
	return train_step(m, x, label, NULL);
}

int kl_train_step_target(kl_model_t *m, const void *x, const void *target)
{
	if (m == NULL || m->loss == KL_LOSS_SOFTMAX_CE ||
	    (m->loss == KL_LOSS_SIGMOID_BCE && target == NULL)) {
		return KL_EINVAL;
	}
	return train_step(m, x, 0, target);
}

static int compute_grads(kl_model_t *m, const void *x, int label, const void *target)
{
	int err = check_step(m, x, label);
	if (err == KL_OK) {
		err = set_target(m, x, target);
	}
	if (err != KL_OK) {
		return err;
	}
	if (!(m->flags & KL_CFG_KEEP_GRADS)) {
		return KL_EINVAL;
	}
	return run_step(m, x, label, 1);
}

int kl_compute_grads(kl_model_t *m, const void *x, int label)
{
	if (m != NULL && m->loss == KL_LOSS_MSE) {
		label = 0;
	}
	return compute_grads(m, x, label, NULL);
}

int kl_compute_grads_target(kl_model_t *m, const void *x, const void *target)
{
	if (m == NULL || m->loss == KL_LOSS_SOFTMAX_CE ||
	    (m->loss == KL_LOSS_SIGMOID_BCE && target == NULL)) {
		return KL_EINVAL;
	}
	return compute_grads(m, x, 0, target);
}

/* the error of the last forward pass (its logits) against the target */
int kl_error_s8(const kl_model_t *m, const void *x, const void *target, uint32_t *mant, int *exp)
{
	if (m == NULL || m->dtype != KL_DTYPE_S8 || m->loss != KL_LOSS_MSE || mant == NULL ||
	    exp == NULL || (target == NULL && (x == NULL || m->n_inputs != m->n_classes)) ||
	    m->tensors[m->output].data == NULL) {
		return KL_EINVAL;
	}
	const kl_tensor_t *out = &m->tensors[m->output], *in = &m->tensors[m->input];
	*mant = kl_mse_err_s8(out->data, out->exp, out->zp, target != NULL ? target : x, in->exp,
			      in->zp, m->n_classes, exp);
	return KL_OK;
}

int kl_error_f32(const kl_model_t *m, const void *x, const void *target, float *err)
{
	if (m == NULL || m->dtype != KL_DTYPE_F32 || m->loss != KL_LOSS_MSE || err == NULL ||
	    (target == NULL && (x == NULL || m->n_inputs != m->n_classes)) ||
	    m->tensors[m->output].data == NULL) {
		return KL_EINVAL;
	}
	const float *y = m->tensors[m->output].data;
	const float *t = target != NULL ? target : x;
	float s = 0.0f;
	for (int i = 0; i < m->n_classes; i++) {
		s += (y[i] - t[i]) * (y[i] - t[i]);
	}
	*err = s;
	return KL_OK;
}

int kl_apply_grads(kl_model_t *m)
{
	if (m == NULL || !(m->flags & KL_CFG_KEEP_GRADS)) {
		return KL_EINVAL;
	}
	if (m->defer) {
		kl_begin_update(m);
	}
	/* same order as the fused step: last op first */
	for (int i = m->n_ops - 1; i >= 0; i--) {
		kl_op_t *op = &m->ops[i];
		if (!kl_trainable(op) || op->gb == NULL) {
			continue;
		}
		const int n_b = (int)kl_n_channels(m, op);
		if (m->defer) { /* Adam or int8 momentum (a batch of 1: KEEP_GRADS) */
			if (m->dtype == KL_DTYPE_F32) {
				kl_step_f32(m, op, op->gw, op->gb, n_b, 1.0f);
			} else {
				kl_step_s8(m, op, op->gw, op->gw_exp, op->gb, op->gb_exp, n_b);
			}
			continue;
		}
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

