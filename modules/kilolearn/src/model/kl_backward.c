/* The backward pass: the loss gradient, activation masks, input gradients
 * handed to their tensors (summed where a tensor has two consumers; int8
 * requantised), compact (banded) input gradients, and each op's weight
 * gradients, through the op table, then its update (kl_update.c). */
/* A part of kl_model.c's translation unit (included there, not compiled alone). */
static int32_t relu6_q(int exp)
{
	return kl_rshift_round(6, exp);
}

/* zero gradient entries where the producing op's activation passed nothing */
static void mask_f32(const kl_tensor_t *t, int act, float *g)
{
	const float *y = t->data;
	const uint32_t n = kl_tsize(t);
	if (act == KL_ACT_NONE) {
		return;
	}
	if (act > KL_ACT_RELU6) { /* sigmoid, tanh, leaky ReLU: times the derivative */
		kl_activation_grad_f32(y, act, g, (int)n);
		return;
	}
	if (act == KL_ACT_RELU) { /* y > 0: its bits in 1 .. 0x7f800000 (+inf), no VCMP / VMRS */
		uint32_t k = 0;
		for (; k + 2u <= n; k += 2u) { /* two a pass: one LDRD */
			uint32_t u0, u1;
			memcpy(&u0, &y[k], sizeof(u0));
			memcpy(&u1, &y[k + 1u], sizeof(u1));
			if (u0 - 1u >= 0x7f800000u) {
				g[k] = 0.0f;
			}
			if (u1 - 1u >= 0x7f800000u) {
				g[k + 1u] = 0.0f;
			}
		}
		if (k < n) {
			uint32_t u;
			memcpy(&u, &y[k], sizeof(u));
			if (u - 1u >= 0x7f800000u) {
				g[k] = 0.0f;
			}
		}
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

static void mask_s8(const kl_tensor_t *t, int act, void *g, int wide, uint32_t n)
{
	mask_s8_range(t, act, g, wide, 0u, n);
}

/* mask elements k0 .. k0 + n - 1 of t's gradient; g points at element k0 */
static void mask_s8_range(const kl_tensor_t *t, int act, void *g, int wide, uint32_t k0,
			  uint32_t n)
{
	if (act == KL_ACT_NONE || act > KL_ACT_RELU6) { /* the others: backward_op_s8 */
		return;
	}
	const int8_t *y = (const int8_t *)t->data + k0;
	/* passes where 0 < y - zp < q6 (kl_act_pass_s8; ReLU has no upper cap),
	 * that is y - (zp + 1) < q6 - 1 unsigned; the others are zeroed */
	const int32_t z1 = t->zp + 1;
	const int32_t q6 = act == KL_ACT_RELU6 ? relu6_q(t->exp) : INT32_MAX;
	const uint32_t lim = q6 >= 1 ? (uint32_t)q6 - 1u : 0u; /* (q6 <= 0: nothing passes) */
	if (wide) {
		int32_t *gw = g;
		uint32_t k = 0;
		for (; k + 2 <= n; k += 2) {
			if ((uint32_t)((int32_t)y[k] - z1) >= lim) {
				gw[k] = 0;
			}
			if ((uint32_t)((int32_t)y[k + 1] - z1) >= lim) {
				gw[k + 1] = 0;
			}
		}
		if (k < n && (uint32_t)((int32_t)y[k] - z1) >= lim) {
			gw[k] = 0;
		}
	} else {
		int8_t *gn = g;
		for (uint32_t k = 0; k < n; k++) {
			if ((uint32_t)((int32_t)y[k] - z1) >= lim) {
				gn[k] = 0;
			}
		}
	}
}

/* Hand tensor t the input gradient in the scratch buffer (float, or int32
 * accumulators with exponent e), summing with what it already has. */
static void kl_give_f32(kl_model_t *m, int t_id)
{
	kl_tensor_t *t = &m->tensors[t_id];
	const float *v = m->scratch;
	float *g = t->grad;
	const uint32_t n = kl_tsize(t);
	for (uint32_t k = 0; k < n; k++) {
		g[k] = t->has_grad ? g[k] + v[k] : v[k];
	}
	t->has_grad = 1;
}

static void kl_give_s8(kl_model_t *m, int t_id, int e)
{
	kl_tensor_t *t = &m->tensors[t_id];
	int32_t *acc = m->scratch;
	const int n = (int)kl_lsize(m, t); /* a partial tensor: its block, packed */
	if (t->producer >= 0 && t->n_users == 1u) { /* mask first: a finer scale */
		mask_s8(t, m->ops[t->producer].act, acc, 1, (uint32_t)n);
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
static void kl_give_s8_compact(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g,
			    const int8_t *w, const int8_t *dy, int e)
{
	kl_tensor_t *t = &m->tensors[op->in0];
	const uint32_t n = kl_tsize(t), row = (uint32_t)g->w * (uint32_t)g->c;
	int16_t *st = m->scratch;
	int32_t *band = (int32_t *)(void *)((uint8_t *)m->scratch + kl_align8(2u * n));
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

static void backward_op_f32(kl_model_t *m, kl_op_t *op, int keep)
{
	kl_tensor_t *y = &m->tensors[op->out];
	const kl_tensor_t *x = &m->tensors[op->in0];
	float *dy = y->grad;
	kl_phase(m, KL_PHASE_BACKWARD);
	mask_f32(y, op->act, dy);
	if (kl_paged_op(op)) {
		if (x->need_grad) {
			pg_dx(m, op, dy, 0);
		}
		kl_phase(m, KL_PHASE_UPDATE);
		pg_update(m, op, dy, 0);
		return;
	}
	if (op->kind == KL_OP_DENSE && !keep && !m->defer && m->upd_policy == KL_UPDATE_ALL &&
	    kl_trainable(op) && !kl_bias_only(op)) {
		/* the plain dense step (what the general path below does for it, without
		 * its geometry, channel block and dispatch): input gradient, fused SGD */
		const int n_in = (int)kl_tsize(x), n_o = (int)kl_tsize(y);
		if (x->need_grad) {
			dense_dx_f32(m, op, NULL, op->w, dy, n_o);
		}
		kl_phase(m, KL_PHASE_UPDATE);
		kl_fully_connected_sgd_f32(op->w, op->b, op->vw, op->vb, dy, x->data, m->lr,
					   m->momentum, n_in, n_o);
		m->upd_touched += op->n_w;
		m->upd_weights += op->n_w;
		return;
	}
	kl_geom_t g = kl_geom(m, op);
	uint32_t c0 = 0, nk = 0;
	int n_out = (int)kl_tsize(y);
	const void *wv = op->w, *dv = dy;
	kl_active_channels(m, op, &g, 4u, &wv, &dv, &n_out, &c0, &nk);
	const float *wc = wv, *dyc = dv;
	if (x->need_grad || op->kind == KL_OP_ADD) { /* add: each input checks its own */
		op_dx_f32(m, op, &g, wc, dyc, n_out);
	}
	if (!kl_trainable(op)) {
		return;
	}
	kl_phase(m, KL_PHASE_UPDATE);
	const int n_b = (int)kl_n_channels(m, op);
	float *const wsc = kl_upd_scratch(m, x);
	float *gw = keep ? op->gw : wsc;
	float *gb = keep ? op->gb : kl_bias_only(op) ? wsc : wsc + op->n_w;
	if (kl_bias_only(op)) { /* gb = dy summed over positions */
		const int n_pos = (int)(kl_tsize(y) / (uint32_t)n_b);
		for (int c = 0; c < n_b; c++) {
			gb[c] = 0.0f;
		}
		for (int p = 0; p < n_pos; p++) {
			for (int c = 0; c < n_b; c++) {
				gb[c] += dy[p * n_b + c];
			}
		}
		if (keep) {
		} else if (m->defer) {
			kl_defer_f32(m, op, NULL, gb, n_b);
		} else {
			kl_sgd_f32(op->b, op->vb, gb, m->lr, m->momentum, n_b);
		}
		return;
	}
	if (nk != 0u && keep) { /* the skipped channels' gradients are zero */
		memset(gw, 0, op->n_w * 4u);
		memset(gb, 0, (size_t)n_b * 4u);
	}
	const uint32_t row = op->n_w / (uint32_t)n_b;
	if (op->kind == KL_OP_DENSE && !keep && !m->defer) { /* fused: no weight gradient stored */
		kl_update_dense_f32(m, op, x->data, dy, (int)kl_tsize(x), n_b, c0, nk);
		return;
	}
	op_dw_f32(m, op, &g, dyc, gw + c0 * row, gb + c0, n_out);
	if (keep) {
	} else if (m->defer) {
		kl_defer_f32(m, op, gw, gb, n_b);
	} else {
		kl_apply_f32(m, op, gw, gb, n_b, c0, nk);
	}
}

/* compact: KL_STEP_COMPACT (conv, depthwise) */
static void backward_op_s8(kl_model_t *m, kl_op_t *op, int keep, int compact)
{
	kl_tensor_t *y = &m->tensors[op->out];
	const kl_tensor_t *x = &m->tensors[op->in0];
	int8_t *dy = y->grad;
	kl_phase(m, KL_PHASE_BACKWARD);
	if (y->n_users != 1u) { /* a single consumer masked it in kl_give_s8 already */
		mask_s8(y, op->act, dy, 0, kl_tsize(y));
	}
	if (op->act > KL_ACT_RELU6) { /* sigmoid, tanh, leaky ReLU: times the derivative */
		y->grad_exp = (int8_t)(y->grad_exp + kl_activation_grad_s8(y->data, y->zp, op->act,
									   dy, (int)kl_tsize(y)));
	}
	const int ey = y->grad_exp;
	if (kl_paged_op(op)) {
		if (x->need_grad) {
			pg_dx(m, op, dy, ey);
		}
		kl_phase(m, KL_PHASE_UPDATE);
		pg_update(m, op, dy, ey);
		return;
	}
	if (op->kind == KL_OP_CONV && (kl_pk(m, x) != 0u || kl_pk(m, y) != 0u)) {
		kl_backward_partial_s8(m, op); /* Paissan's partial activations */
		return;
	}
	kl_geom_t g; /* dense layers read no geometry */
	if (op->kind != KL_OP_DENSE) {
		g = kl_geom(m, op);
	}
	uint32_t c0 = 0, nk = 0;
	int n_out = (int)kl_tsize(y);
	const void *wv = op->w, *dv = dy;
	kl_active_channels(m, op, &g, 1u, &wv, &dv, &n_out, &c0, &nk);
	const int8_t *wc = wv, *dyc = dv;
	if (x->need_grad || op->kind == KL_OP_ADD) { /* add: each input checks its own */
		op_dx_s8(m, op, &g, wc, dyc, n_out, ey, compact);
	}
	if (!kl_trainable(op)) {
		return;
	}
	kl_phase(m, KL_PHASE_UPDATE);
	const int xe = x->exp;
	const int n_b = (int)kl_n_channels(m, op);
	int32_t *const wsc = kl_upd_scratch(m, x);
	int32_t *gw = keep ? op->gw : wsc;
	int32_t *gb = keep ? op->gb : kl_bias_only(op) ? wsc : wsc + op->n_w;
	if (kl_bias_only(op)) { /* gb = dy summed over positions */
		const int n_pos = (int)(kl_tsize(y) / (uint32_t)n_b);
		for (int c = 0; c < n_b; c++) {
			gb[c] = 0;
		}
		for (int p = 0; p < n_pos; p++) {
			for (int c = 0; c < n_b; c++) {
				gb[c] += dy[p * n_b + c];
			}
		}
		if (keep) {
			op->gb_exp = (int8_t)ey;
		} else if (m->defer) {
			kl_defer_s8(m, op, NULL, 0, gb, ey, n_b);
		} else {
			kl_sgd_bias_s8(op->b, gb, m->lr_q, op->b_exp + KL_LR_FRAC_BITS - ey, n_b);
		}
		return;
	}
	if (nk != 0u && keep) { /* the skipped channels' gradients are zero */
		memset(gw, 0, op->n_w * 4u);
		memset(gb, 0, (size_t)n_b * 4u);
	}
	const uint32_t row = op->n_w / (uint32_t)n_b;
	if (op->kind == KL_OP_DENSE && !keep && !m->defer) { /* fused: no weight gradient stored */
		kl_update_dense_s8(m, op, x, dy, ey, n_b, c0, nk);
		return;
	}
	op_dw_s8(m, op, &g, dyc, gw + c0 * row, gb + c0, n_out);
	if (m->defer && !keep) { /* the summed gradients keep their own exponents */
		kl_defer_s8(m, op, gw, ey + xe, gb, ey, n_b);
		return;
	}
	op->gw_exp = (int8_t)(ey + xe);
	op->gb_exp = (int8_t)ey;
	if (!keep) {
		kl_apply_s8(m, op, gw, gb, n_b, c0, nk);
	}
}

/* the loss gradient of the logits: softmax CE on the label, MSE or sigmoid
 * BCE on m->target (set by the step call: the input for an autoencoder) */
static void kl_loss(kl_model_t *m, int label)
{
	for (int k = 0; k < m->n_tensors; k++) {
		m->tensors[k].has_grad = 0;
	}
	kl_tensor_t *out = &m->tensors[m->output];
	const int n = m->n_classes;
	kl_phase(m, KL_PHASE_LOSS);
	if (m->dtype == KL_DTYPE_F32) {
		if (m->loss == KL_LOSS_MSE) {
			m->loss_f32 = kl_mse_f32(out->data, m->target, n, out->grad);
		} else if (m->loss == KL_LOSS_SIGMOID_BCE) {
			m->loss_f32 = kl_sigmoid_bce_f32(out->data, m->target, n, label, out->grad);
		} else {
			m->loss_f32 = kl_softmax_ce_f32(out->data, n, label, m->class_mask, out->grad);
		}
	} else {
		const int shift = out->exp - m->lut_exp;
		if (m->loss == KL_LOSS_MSE) {
			const kl_tensor_t *in = &m->tensors[m->input];
			int ee = 0;
			m->err_mant = kl_mse_err_s8(out->data, out->exp, out->zp, m->target, in->exp,
						    in->zp, n, &ee);
			m->err_exp = (int8_t)ee;
			out->grad_exp = (int8_t)kl_mse_s8(out->data, out->exp, out->zp, m->target,
							  in->exp, in->zp, n, m->scratch, out->grad);
		} else if (m->loss == KL_LOSS_SIGMOID_BCE) {
			out->grad_exp = (int8_t)(-15 + kl_sigmoid_bce_s8(out->data, out->zp, n, m->target,
									 label, m->lut,
									 shift < 0 ? 0 : shift,
									 m->scratch, out->grad));
		} else {
			out->grad_exp = (int8_t)(-15 + kl_softmax_ce_s8(out->data, n, label, m->lut,
								      shift < 0 ? 0 : shift,
								      m->class_mask, m->scratch,
								      out->grad));
		}
		m->logits_grad_exp = out->grad_exp;
	}
	out->has_grad = 1;
}

static void kl_backward_op(kl_model_t *m, kl_op_t *op, int keep, int compact)
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

/* An int8 step whose loss gradient is all zero (the prediction so sure that
 * it rounds to nothing: four steps in ten late in training the digits MLP)
 * makes every gradient zero, so every weight and bias step zero: nothing is
 * computed. What the update would leave is left: the dither advanced past
 * each updated op's weights, the update counters, the has_grad marks. Only
 * where every updated op is a paired dense layer (its weights never at -128,
 * which a zero step would lift to -127) and the zero gradient moves nothing
 * else (no momentum or batches, kept gradients, channel-sparse or partial
 * policy, paged log: the full update, channel norm and top-r, whose zero
 * steps change nothing); else the backward pass runs as it is. Returns 1 if
 * the step was done so. */
static int kl_zero_step_s8(kl_model_t *m, int keep)
{
	if (m->dtype != KL_DTYPE_S8 || keep || m->defer || m->paged || m->part_pm != 0u ||
	    (m->upd_policy != KL_UPDATE_ALL && m->upd_policy != KL_UPDATE_CHANNEL_NORM &&
	     m->upd_policy != KL_UPDATE_TOPR)) {
		return 0;
	}
	const int8_t *g = m->tensors[m->output].grad;
	uint32_t any = 0;
	int k = 0;
	for (; k + 4 <= m->n_classes; k += 4) {
		uint32_t v;
		memcpy(&v, g + k, 4);
		any |= v;
	}
	for (; k < m->n_classes; k++) {
		any |= (uint8_t)g[k];
	}
	if (any != 0u) {
		return 0;
	}
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		if (kl_trainable(op) && !kl_bias_only(op) && op->n_w != 0u && !kl_paired(op)) {
			return 0;
		}
	}
	for (int i = m->n_ops - 1; i >= 0; i--) {
		const kl_op_t *op = &m->ops[i];
		if (!m->tensors[op->out].has_grad) {
			continue;
		}
		if (m->tensors[op->in0].need_grad) {
			m->tensors[op->in0].has_grad = 1;
		}
		if (op->kind == KL_OP_ADD && m->tensors[op->in1].need_grad) {
			m->tensors[op->in1].has_grad = 1;
		}
		if (kl_trainable(op) && !kl_bias_only(op)) { /* (a paired dense layer) */
			m->dither += op->n_w * KL_WEYL;
			/* what kl_update_dense_s8 counts: every weight, channel norm's
			 * rows, top-r's non-zero steps (none) */
			m->upd_touched += m->upd_policy == KL_UPDATE_ALL ? op->n_w
					  : m->upd_policy == KL_UPDATE_TOPR
						  ? 0u
						  : upd_count(kl_tsize(&m->tensors[op->out]), m->upd_frac) *
							    kl_tsize(&m->tensors[op->in0]);
			m->upd_weights += op->n_w;
		}
	}
	return 1;
}

/* Backward pass; keep != 0 stores gradients in gw/gb instead of updating. */
static void kl_backward(kl_model_t *m, int label, int keep)
{
	kl_loss(m, label);
	if (kl_zero_step_s8(m, keep)) {
		return;
	}
	if (m->paged) { /* the step's rows go to the log as one transaction */
		m->pg_err = pg_prepare(m);
		if (m->pg_err != KL_OK) {
			return;
		}
	}
	for (int i = m->n_ops - 1; i >= 0; i--) {
		kl_backward_op(m, &m->ops[i], keep, 0);
	}
}
