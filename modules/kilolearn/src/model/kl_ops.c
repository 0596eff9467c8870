/* The op table: what each op kind computes in the forward pass, for its
 * input gradient and for its weight gradients, per dtype, mapped onto the
 * kernels (kl_kernels.h; ref, dsp, fpu or cmsis_nn by the build). A new op
 * is a kernel file and one row here (and its twin in reference.py). */
/* A part of kl_model.c's translation unit (included there, not compiled alone). */
#define X(m, op)  (&(m)->tensors[(op)->in0])
#define X1(m, op) (&(m)->tensors[(op)->in1])
#define Y(m, op)  (&(m)->tensors[(op)->out])

/* ---- dense ---------------------------------------------------------------------- */

static void dense_fwd_f32(kl_model_t *m, kl_op_t *op, const kl_geom_t *g)
{
	(void)g;
	kl_fully_connected_f32(X(m, op)->data, op->w, op->b, Y(m, op)->data,
			       (int)kl_tsize(X(m, op)), (int)kl_tsize(Y(m, op)), kl_kernel_act(op->act));
}

static int dense_fwd_s8(kl_model_t *m, kl_op_t *op, const kl_geom_t *g, kl_requant_t *rq)
{
	(void)g;
	const kl_tensor_t *x = X(m, op);
#if KL_FC_PAIRED
	if (kl_paired(op)) {
		return kl_dsp_fully_connected_paired_s8(x->data, x->zp, op->w, op->b, rq,
							Y(m, op)->data, (int)kl_tsize(x),
							(int)kl_tsize(Y(m, op)), m->scratch);
	}
#endif
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
	/* on the op's parameter block (all but paged ops have one); a trained
	 * op's bias changed since the last call */
	int32_t *prep = m->cmsis[op - m->ops];
	if (prep != NULL) {
		return kl_cmsis_fully_connected_prep_s8(x->data, x->zp, op->w, op->b, rq,
							Y(m, op)->data, (int)kl_tsize(x),
							(int)kl_tsize(Y(m, op)), m->scratch, prep,
							kl_trainable(op));
	}
#endif
	return kl_fully_connected_s8(x->data, x->zp, op->w, op->b, rq, Y(m, op)->data,
				     (int)kl_tsize(x), (int)kl_tsize(Y(m, op)), m->scratch);
}

static void dense_dx_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *w,
			 const float *dy, int n_out)
{
	(void)g;
	kl_tensor_t *t = X(m, op);
	if (!t->has_grad) { /* the tensor's first gradient: written in place, not copied */
		kl_fully_connected_backward_input_f32(w, dy, t->grad, (int)kl_tsize(t), n_out);
		t->has_grad = 1;
		return;
	}
	kl_fully_connected_backward_input_f32(w, dy, m->scratch, (int)kl_tsize(t), n_out);
	kl_give_f32(m, op->in0);
}

static void dense_dx_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *w,
			const int8_t *dy, int n_out, int ey, int compact)
{
	(void)g;
	(void)compact;
#if KL_FC_PAIRED
	if (kl_paired(op)) { /* never channel-sparse: w, dy and n_out are the op's */
		kl_dsp_fully_connected_backward_input_paired_s8(w, dy, m->scratch,
								(int)kl_tsize(X(m, op)), n_out);
		kl_give_s8(m, op->in0, op->w_exp + ey);
		return;
	}
#endif
	kl_fully_connected_backward_input_s8(w, dy, m->scratch, (int)kl_tsize(X(m, op)), n_out);
	kl_give_s8(m, op->in0, op->w_exp + ey);
}

static void dense_dw_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *dy,
			 float *gw, float *gb, int n_out)
{
	(void)g;
	kl_fully_connected_grad_f32(dy, X(m, op)->data, gw, gb, (int)kl_tsize(X(m, op)), n_out);
}

static void dense_dw_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *dy,
			int32_t *gw, int32_t *gb, int n_out)
{
	(void)g;
	const kl_tensor_t *x = X(m, op);
	kl_fully_connected_grad_s8(dy, x->data, x->zp, gw, gb, (int)kl_tsize(x), n_out);
}

/* ---- convolution and depthwise convolution -------------------------------------- */

/* The six entry points of a windowed op whose kernels are named
 * <kern>_{f32,s8}, <kern>_backward_input_{f32,s8}, <kern>_grad_{f32,s8}
 * (convolution and depthwise convolution: the same calls, other kernels; the
 * depthwise op is never channel-sparse, so w and dy are whole for both). */
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
/* on the op's parameter block (kl_cmsis_*_prep_s8; every int8 conv and
 * depthwise op has one, kl_model_init); a trained op's bias changed since
 * the last call */
#define KL_WINDOW_FWD_S8(kern, m, op, g, x, rq)                                                   \
	kern##_prep_s8(g, (x)->data, (x)->zp, (op)->w, (op)->b, rq, Y(m, op)->data, (m)->kscratch, \
		       (m)->cmsis[(op) - (m)->ops], kl_trainable(op))
#define kl_conv_prep_s8           kl_cmsis_conv_prep_s8
#define kl_depthwise_conv_prep_s8 kl_cmsis_depthwise_conv_prep_s8
#else
#define KL_WINDOW_FWD_S8(kern, m, op, g, x, rq)                                                   \
	kern##_s8(g, (x)->data, (x)->zp, (op)->w, (op)->b, rq, Y(m, op)->data, (m)->kscratch)
#endif

#define KL_WINDOW_OP(name, kern)                                                               \
	static void name##_fwd_f32(kl_model_t *m, kl_op_t *op, const kl_geom_t *g)             \
	{                                                                                      \
		kern##_f32(g, X(m, op)->data, op->w, op->b, Y(m, op)->data,                    \
			   kl_kernel_act(op->act));                                            \
	}                                                                                      \
	static int name##_fwd_s8(kl_model_t *m, kl_op_t *op, const kl_geom_t *g,              \
				 kl_requant_t *rq)                                             \
	{                                                                                      \
		const kl_tensor_t *x = X(m, op);                                               \
		return KL_WINDOW_FWD_S8(kern, m, op, g, x, rq);                                \
	}                                                                                      \
	static void name##_dx_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g,       \
				  const float *w, const float *dy, int n_out)                  \
	{                                                                                      \
		(void)n_out;                                                                   \
		kern##_backward_input_f32(g, w, dy, m->scratch);                               \
		kl_give_f32(m, op->in0);                                                       \
	}                                                                                      \
	static void name##_dx_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g,        \
				 const int8_t *w, const int8_t *dy, int n_out, int ey,         \
				 int compact)                                                  \
	{                                                                                      \
		(void)n_out;                                                                   \
		if (compact) {                                                                 \
			kl_give_s8_compact(m, op, g, w, dy, op->w_exp + ey);                   \
			return;                                                                \
		}                                                                              \
		kern##_backward_input_s8(g, w, dy, m->scratch, m->kscratch);                   \
		kl_give_s8(m, op->in0, op->w_exp + ey);                                        \
	}                                                                                      \
	static void name##_dw_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g,       \
				  const float *dy, float *gw, float *gb, int n_out)            \
	{                                                                                      \
		(void)n_out;                                                                   \
		kern##_grad_f32(g, X(m, op)->data, dy, gw, gb);                                \
	}                                                                                      \
	static void name##_dw_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g,        \
				 const int8_t *dy, int32_t *gw, int32_t *gb, int n_out)        \
	{                                                                                      \
		(void)n_out;                                                                   \
		const kl_tensor_t *x = X(m, op);                                               \
		kern##_grad_s8(g, x->data, x->zp, dy, gw, gb, m->kscratch);                    \
	}

KL_WINDOW_OP(conv, kl_conv)
KL_WINDOW_OP(dw, kl_depthwise_conv)

/* ---- pooling (keeps the input's scale; no parameters) -------------------------------- */

static void avgpool_fwd_f32(kl_model_t *m, kl_op_t *op, const kl_geom_t *g)
{
	kl_avgpool_f32(g, X(m, op)->data, Y(m, op)->data);
}

static void maxpool_fwd_f32(kl_model_t *m, kl_op_t *op, const kl_geom_t *g)
{
	kl_maxpool_f32(g, X(m, op)->data, Y(m, op)->data);
}

static void pool_scale_s8(kl_model_t *m, const kl_op_t *op)
{
	Y(m, op)->exp = X(m, op)->exp; /* pooling keeps the input's scale */
	Y(m, op)->zp = X(m, op)->zp;
}

static int avgpool_fwd_s8(kl_model_t *m, kl_op_t *op, const kl_geom_t *g, kl_requant_t *rq)
{
	(void)rq;
	pool_scale_s8(m, op);
	kl_avgpool_s8(g, X(m, op)->data, X(m, op)->zp, Y(m, op)->data);
	return 0;
}

static int maxpool_fwd_s8(kl_model_t *m, kl_op_t *op, const kl_geom_t *g, kl_requant_t *rq)
{
	(void)rq;
	pool_scale_s8(m, op);
	kl_maxpool_s8(g, X(m, op)->data, Y(m, op)->data);
	return 0;
}

static void avgpool_dx_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *w,
			   const float *dy, int n_out)
{
	(void)w;
	(void)n_out;
	kl_avgpool_backward_f32(g, dy, m->scratch);
	kl_give_f32(m, op->in0);
}

static void maxpool_dx_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *w,
			   const float *dy, int n_out)
{
	(void)w;
	(void)n_out;
	kl_maxpool_backward_f32(g, X(m, op)->data, dy, m->scratch);
	kl_give_f32(m, op->in0);
}

static void avgpool_dx_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *w,
			  const int8_t *dy, int n_out, int ey, int compact)
{
	(void)w;
	(void)n_out;
	(void)compact;
	kl_avgpool_backward_s8(g, dy, m->scratch);
	kl_give_s8(m, op->in0, ey - 16);
}

static void maxpool_dx_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *w,
			  const int8_t *dy, int n_out, int ey, int compact)
{
	(void)w;
	(void)n_out;
	(void)compact;
	kl_maxpool_backward_s8(g, X(m, op)->data, dy, m->scratch);
	kl_give_s8(m, op->in0, ey);
}

/* ---- add (two inputs, the same shape) --------------------------------------------- */

static void add_fwd_f32(kl_model_t *m, kl_op_t *op, const kl_geom_t *g)
{
	(void)g;
	kl_add_f32(X(m, op)->data, X1(m, op)->data, Y(m, op)->data, (int)kl_tsize(Y(m, op)),
		   op->act);
}

static int add_fwd_s8(kl_model_t *m, kl_op_t *op, const kl_geom_t *g, kl_requant_t *rq)
{
	(void)g;
	const kl_tensor_t *x = X(m, op), *x1 = X1(m, op);
	kl_tensor_t *y = Y(m, op);
	const int emin = x->exp < x1->exp ? x->exp : x1->exp;
	const int sa = x->exp - emin > ADD_SHIFT_MAX ? ADD_SHIFT_MAX : x->exp - emin;
	const int sb = x1->exp - emin > ADD_SHIFT_MAX ? ADD_SHIFT_MAX : x1->exp - emin;
	kl_requant_init(rq, emin, emin, y->exp, y->zp, op->act);
	return kl_add_s8(x->data, x->zp, sa, x1->data, x1->zp, sb, rq, y->data, (int)kl_tsize(y));
}

static void add_dx_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *w,
		       const float *dy, int n_out)
{
	(void)g;
	(void)w;
	(void)n_out;
	for (int k = 0; k < 2; k++) {
		const int t = k == 0 ? op->in0 : op->in1;
		if (m->tensors[t].need_grad) {
			/* planned: may not overlap, but be safe */
			memmove(m->scratch, dy, kl_tsize(Y(m, op)) * 4u);
			kl_give_f32(m, t);
		}
	}
}

static void add_dx_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *w,
		      const int8_t *dy, int n_out, int ey, int compact)
{
	(void)g;
	(void)w;
	(void)n_out;
	(void)compact;
	for (int k = 0; k < 2; k++) {
		const int t = k == 0 ? op->in0 : op->in1;
		if (m->tensors[t].need_grad) {
			int32_t *acc = m->scratch;
			for (uint32_t j = 0; j < kl_tsize(Y(m, op)); j++) {
				acc[j] = dy[j];
			}
			kl_give_s8(m, t, ey);
		}
	}
}

/* ---- ops without parameters: no weight gradient ------------------------------------ */

static void none_dw_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *dy,
			float *gw, float *gb, int n_out)
{
	(void)m;
	(void)op;
	(void)g;
	(void)dy;
	(void)gw;
	(void)gb;
	(void)n_out;
}

static void none_dw_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *dy,
		       int32_t *gw, int32_t *gb, int n_out)
{
	(void)m;
	(void)op;
	(void)g;
	(void)dy;
	(void)gw;
	(void)gb;
	(void)n_out;
}

/* ---- the table ----------------------------------------------------------------------
 * One row per op kind: X(kind, prefix of its entry points, prefix of its weight
 * gradient). The dispatchers below are generated from it as switches (not
 * function pointers), so the compiler inlines an entry point into its caller
 * exactly as if it were written there. */
#define KL_OPS(X)                                                                                 \
	X(KL_OP_DENSE, dense, dense)                                                              \
	X(KL_OP_CONV, conv, conv)                                                                 \
	X(KL_OP_DWCONV, dw, dw)                                                                   \
	X(KL_OP_AVGPOOL, avgpool, none)                                                           \
	X(KL_OP_MAXPOOL, maxpool, none)                                                           \
	X(KL_OP_ADD, add, none)

static void op_fwd_f32(kl_model_t *m, kl_op_t *op, const kl_geom_t *g)
{
	switch (op->kind) {
#define CASE(kind, p, d)                                                                          \
	case kind:                                                                                \
		p##_fwd_f32(m, op, g);                                                            \
		break;
		KL_OPS(CASE)
#undef CASE
	default:
		break;
	}
}

static int op_fwd_s8(kl_model_t *m, kl_op_t *op, const kl_geom_t *g, kl_requant_t *rq)
{
	switch (op->kind) {
#define CASE(kind, p, d)                                                                          \
	case kind:                                                                                \
		return p##_fwd_s8(m, op, g, rq);
		KL_OPS(CASE)
#undef CASE
	default:
		return 0;
	}
}

static void op_dx_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *w,
		      const float *dy, int n_out)
{
	switch (op->kind) {
#define CASE(kind, p, d)                                                                          \
	case kind:                                                                                \
		p##_dx_f32(m, op, g, w, dy, n_out);                                               \
		break;
		KL_OPS(CASE)
#undef CASE
	default:
		break;
	}
}

static void op_dx_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *w,
		     const int8_t *dy, int n_out, int ey, int compact)
{
	switch (op->kind) {
#define CASE(kind, p, d)                                                                          \
	case kind:                                                                                \
		p##_dx_s8(m, op, g, w, dy, n_out, ey, compact);                                   \
		break;
		KL_OPS(CASE)
#undef CASE
	default:
		break;
	}
}

static void op_dw_f32(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const float *dy,
		      float *gw, float *gb, int n_out)
{
	switch (op->kind) {
#define CASE(kind, p, d)                                                                          \
	case kind:                                                                                \
		d##_dw_f32(m, op, g, dy, gw, gb, n_out);                                          \
		break;
		KL_OPS(CASE)
#undef CASE
	default:
		break;
	}
}

static void op_dw_s8(kl_model_t *m, const kl_op_t *op, const kl_geom_t *g, const int8_t *dy,
		     int32_t *gw, int32_t *gb, int n_out)
{
	switch (op->kind) {
#define CASE(kind, p, d)                                                                          \
	case kind:                                                                                \
		d##_dw_s8(m, op, g, dy, gw, gb, n_out);                                           \
		break;
		KL_OPS(CASE)
#undef CASE
	default:
		break;
	}
}
