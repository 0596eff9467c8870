/* Model layout in the arena, forward, backward and update for sequential
 * models of fused Dense(+ReLU) layers ending in softmax cross-entropy. */
#include <string.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_kernels.h"

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static int is_trainable(const kl_layer_t *L)
{
	return (L->flags & KL_LAYER_TRAINABLE) != 0u;
}

/* Copy size bytes from the blob into the arena (trainable tensors). */
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
	m->n_layers = blob[KL_BH_N_LAYERS];
	m->n_inputs = rd16(blob + KL_BH_N_INPUTS);
	m->n_classes = rd16(blob + KL_BH_N_CLASSES);
	m->in_exp = (int8_t)blob[KL_BH_IN_EXP];
	m->in_zp = (int8_t)blob[KL_BH_IN_ZP];
	m->lut_exp = (int8_t)blob[KL_BH_LUT_EXP];
	const int s8 = m->dtype == KL_DTYPE_S8;
	if (s8) {
		m->lut = (const uint16_t *)(const void *)(blob + rd32(blob + KL_BH_LUT_OFF));
	}
	const int training = cfg != NULL;
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
	const size_t esize = s8 ? 1u : 4u;
	size_t widest = m->n_inputs;
	const uint32_t layers_off = rd32(blob + KL_BH_LAYERS_OFF);
	for (int l = 0; l < m->n_layers; l++) {
		const uint8_t *r = blob + layers_off + (uint32_t)l * KL_BLOB_LAYER_SIZE;
		kl_layer_t *L = &m->layers[l];
		L->op = r[KL_BL_OP];
		L->act = r[KL_BL_ACT];
		L->flags = training ? r[KL_BL_FLAGS] : 0u;
		L->n_in = rd16(r + KL_BL_N_IN);
		L->n_out = rd16(r + KL_BL_N_OUT);
		L->w_exp = (int8_t)r[KL_BL_W_EXP];
		L->b_exp = (int8_t)r[KL_BL_B_EXP];
		L->y_exp = (int8_t)r[KL_BL_Y_EXP];
		L->y_zp = (int8_t)r[KL_BL_Y_ZP];
		const uint8_t *w = blob + rd32(r + KL_BL_W_OFF);
		const uint8_t *b = blob + rd32(r + KL_BL_B_OFF);
		const size_t wsize = (size_t)L->n_in * L->n_out * esize;
		const size_t bsize = (size_t)L->n_out * 4u;
		if (is_trainable(L)) {
			L->w = arena_copy(arena, w, wsize);
			L->b = arena_copy(arena, b, bsize);
			if (L->w == NULL || L->b == NULL) {
				return KL_ENOMEM;
			}
			if (!s8 && m->momentum != 0.0f) {
				L->vw = arena_zeros(arena, wsize);
				L->vb = arena_zeros(arena, bsize);
				if (L->vw == NULL || L->vb == NULL) {
					return KL_ENOMEM;
				}
			}
			if (m->flags & KL_CFG_KEEP_GRADS) {
				L->gw = kl_arena_alloc(arena, (size_t)L->n_in * L->n_out * 4u, 4u);
				L->gb = kl_arena_alloc(arena, (size_t)L->n_out * esize, 4u);
				if (L->gw == NULL || L->gb == NULL) {
					return KL_ENOMEM;
				}
			}
		} else { /* frozen: read in place */
			L->w = (void *)(uintptr_t)w;
			L->b = (void *)(uintptr_t)b;
		}
		L->y = kl_arena_alloc(arena, (size_t)L->n_out * esize, 4u);
		if (L->y == NULL) {
			return KL_ENOMEM;
		}
		widest = L->n_out > widest ? L->n_out : widest;
	}
	if (training) {
		m->grad_a = kl_arena_alloc(arena, widest * esize, 4u);
		m->grad_b = kl_arena_alloc(arena, widest * esize, 4u);
		if (m->grad_a == NULL || m->grad_b == NULL) {
			return KL_ENOMEM;
		}
	}
	if (s8) {
		m->acc = kl_arena_alloc(arena, KL_FC_S8_SCRATCH(widest, widest), 4u);
		if (m->acc == NULL) {
			return KL_ENOMEM;
		}
	}
	return KL_OK;
}

static const void *layer_input(const kl_model_t *m, int l)
{
	return l == 0 ? m->x : m->layers[l - 1].y;
}

static int8_t layer_input_exp(const kl_model_t *m, int l)
{
	return l == 0 ? m->in_exp : m->layers[l - 1].y_exp;
}

static int8_t layer_input_zp(const kl_model_t *m, int l)
{
	return l == 0 ? m->in_zp : m->layers[l - 1].y_zp;
}

static inline void phase(const kl_model_t *m, int p)
{
	if (m->hook != NULL) {
		m->hook(m->hook_ctx, p);
	}
}

static int forward(kl_model_t *m, const void *x)
{
	if (m == NULL || x == NULL) {
		return KL_EINVAL;
	}
	phase(m, KL_PHASE_FORWARD);
	m->x = x;
	for (int l = 0; l < m->n_layers; l++) {
		kl_layer_t *L = &m->layers[l];
		const int relu = L->act == KL_ACT_RELU;
		if (m->dtype == KL_DTYPE_F32) {
			kl_fully_connected_f32(layer_input(m, l), L->w, L->b, L->y, L->n_in,
					       L->n_out, relu);
		} else {
			const int xe = layer_input_exp(m, l);
			L->sat = (uint8_t)kl_fully_connected_s8(
				layer_input(m, l), layer_input_zp(m, l), L->w, L->b,
				xe + L->w_exp - L->b_exp, L->y_exp - xe - L->w_exp, L->y_zp, relu,
				L->y, L->n_in, L->n_out, (int16_t *)(void *)m->acc);
		}
	}
	const kl_layer_t *out = &m->layers[m->n_layers - 1];
	return m->dtype == KL_DTYPE_F32 ? kl_argmax_f32(out->y, out->n_out)
					: kl_argmax_s8(out->y, out->n_out);
}

int kl_predict(kl_model_t *m, const void *x)
{
	return forward(m, x);
}

const void *kl_logits(const kl_model_t *m)
{
	return m->layers[m->n_layers - 1].y;
}

/* Index of the first layer that needs a gradient: layers before it get no
 * backward work at all. */
static int first_trainable(const kl_model_t *m)
{
	for (int l = 0; l < m->n_layers; l++) {
		if (is_trainable(&m->layers[l])) {
			return l;
		}
	}
	return m->n_layers;
}

/* Backward pass; keep != 0 stores gradients in gw/gb instead of updating. */
static int backward(kl_model_t *m, int label, int keep)
{
	const int first = first_trainable(m);
	const int last = m->n_layers - 1;
	void *dy = m->grad_a;
	void *dx = m->grad_b;
	int ey = 0;
	phase(m, KL_PHASE_LOSS);
	if (m->dtype == KL_DTYPE_F32) {
		kl_softmax_ce_f32(m->layers[last].y, m->n_classes, label, dy);
	} else {
		const int shift = m->layers[last].y_exp - m->lut_exp;
		ey = -15 + kl_softmax_ce_s8(m->layers[last].y, m->n_classes, label, m->lut,
					    shift < 0 ? 0 : shift, m->acc, dy);
		m->logits_grad_exp = (int8_t)ey;
	}
	for (int l = last; l >= first; l--) {
		kl_layer_t *L = &m->layers[l];
		const void *x = layer_input(m, l);
		if (m->dtype == KL_DTYPE_F32) {
			float *g = dy;
			phase(m, KL_PHASE_BACKWARD);
			if (L->act == KL_ACT_RELU) {
				const float *y = L->y;
				for (int i = 0; i < L->n_out; i++) {
					g[i] = y[i] > 0.0f ? g[i] : 0.0f;
				}
			}
			if (l > first) {
				kl_fully_connected_backward_input_f32(L->w, g, dx, L->n_in, L->n_out);
			}
			phase(m, KL_PHASE_UPDATE);
			if (!is_trainable(L)) {
				/* nothing to update */
			} else if (keep) {
				kl_fully_connected_grad_f32(g, x, L->gw, L->gb, L->n_in, L->n_out);
			} else {
				kl_fully_connected_sgd_f32(L->w, L->b, L->vw, L->vb, g, x, m->lr,
							   m->momentum, L->n_in, L->n_out);
			}
		} else {
			int8_t *g = dy;
			phase(m, KL_PHASE_BACKWARD);
			if (L->act == KL_ACT_RELU) {
				const int8_t *y = L->y;
				for (int i = 0; i < L->n_out; i++) {
					g[i] = y[i] > L->y_zp ? g[i] : 0;
				}
			}
			const int xe = layer_input_exp(m, l);
			const int xz = layer_input_zp(m, l);
			int ex = 0;
			if (l > first) {
				const kl_layer_t *P = &m->layers[l - 1];
				const int masked = P->act == KL_ACT_RELU;
				ex = L->w_exp + ey +
				     kl_fully_connected_backward_input_s8(
					     L->w, g, masked ? P->y : NULL, P->y_zp, m->acc, dx,
					     L->n_in, L->n_out);
			}
			phase(m, KL_PHASE_UPDATE);
			if (!is_trainable(L)) {
				/* nothing to update */
			} else if (keep) {
				kl_fully_connected_grad_s8(g, x, xz, L->gw, L->n_in, L->n_out);
				memcpy(L->gb, g, L->n_out);
				L->gw_exp = (int8_t)(ey + xe);
				L->gb_exp = (int8_t)ey;
			} else {
				kl_fully_connected_sgd_s8(L->w, L->b, g, x, xz, m->lr_q,
							  L->w_exp + KL_LR_FRAC_BITS - ey - xe,
							  L->b_exp + KL_LR_FRAC_BITS - ey, &m->dither,
							  L->n_in, L->n_out, (int16_t *)(void *)m->acc);
			}
			ey = ex;
		}
		void *t = dy;
		dy = dx;
		dx = t;
	}
	return KL_OK;
}

/* Delayed dynamic activation scaling: an output that saturated in this
 * step's forward pass gets twice the range from the next step on. */
static void adapt_ranges(kl_model_t *m)
{
	if (m->dtype != KL_DTYPE_S8) {
		return;
	}
	for (int l = 0; l < m->n_layers; l++) {
		kl_layer_t *L = &m->layers[l];
		if (L->sat && L->y_exp < KL_EXP_MAX) {
			L->y_exp++;
		}
		L->sat = 0;
	}
}

static int check_step(const kl_model_t *m, const void *x, int label)
{
	if (m == NULL || x == NULL || label < 0 || label >= m->n_classes || m->grad_a == NULL) {
		return KL_EINVAL;
	}
	return KL_OK;
}

int kl_train_step(kl_model_t *m, const void *x, int label)
{
	int err = check_step(m, x, label);
	if (err != KL_OK) {
		return err;
	}
	const int pred = forward(m, x);
	backward(m, label, 0);
	adapt_ranges(m);
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
	const int pred = forward(m, x);
	backward(m, label, 1);
	return pred;
}

int kl_apply_grads(kl_model_t *m)
{
	if (m == NULL || !(m->flags & KL_CFG_KEEP_GRADS)) {
		return KL_EINVAL;
	}
	/* same order as the fused step: last layer first */
	for (int l = m->n_layers - 1; l >= 0; l--) {
		kl_layer_t *L = &m->layers[l];
		if (!is_trainable(L)) {
			continue;
		}
		const int n = L->n_in * L->n_out;
		if (m->dtype == KL_DTYPE_F32) {
			kl_sgd_f32(L->w, L->vw, L->gw, m->lr, m->momentum, n);
			kl_sgd_f32(L->b, L->vb, L->gb, m->lr, m->momentum, L->n_out);
		} else {
			kl_sgd_weights_s8(L->w, L->gw, m->lr_q,
					  L->w_exp + KL_LR_FRAC_BITS - L->gw_exp, &m->dither, n);
			kl_sgd_bias_s8(L->b, L->gb, m->lr_q, L->b_exp + KL_LR_FRAC_BITS - L->gb_exp,
				       L->n_out);
		}
	}
	adapt_ranges(m);
	return KL_OK;
}
