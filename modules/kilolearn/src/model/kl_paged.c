/* Paged dense ops (docs/paged-weights.md): weights read in place from the
 * weight store, row by row from the blob or from the weight log; a training
 * step writes the rows it changes to the log, chunk by chunk through a small
 * buffer, as one transaction; folds. */
/* A part of kl_model.c's translation unit (included there, not compiled alone). */
#define PG_CHUNK 256u /* bytes of a row updated at a time (a multiple of 4) */

static int kl_paged_op(const kl_op_t *op)
{
	return op->rows != NULL;
}

static uint32_t pg_es(const kl_model_t *m)
{
	return m->dtype == KL_DTYPE_S8 ? 1u : 4u;
}

/* bytes of one row of weights, and of a row's log payload (weights, bias) */
static uint32_t pg_row_bytes(const kl_model_t *m, const kl_op_t *op)
{
	return kl_tsize(&m->tensors[op->in0]) * pg_es(m);
}

static uint32_t pg_payload(const kl_model_t *m, const kl_op_t *op)
{
	return ((pg_row_bytes(m, op) + 3u) & ~3u) + 4u;
}

static const uint8_t *pg_row(const kl_model_t *m, const kl_op_t *op, uint32_t r)
{
	return op->rows[r] != NULL ? op->rows[r]
				   : (const uint8_t *)op->w + (size_t)r * pg_row_bytes(m, op);
}

static const void *pg_bias(const kl_model_t *m, const kl_op_t *op, uint32_t r)
{
	return op->rows[r] != NULL ? (const void *)(op->rows[r] + pg_payload(m, op) - 4u)
				   : (const void *)((const uint8_t *)op->b + 4u * r);
}

/* Forward: runs of rows still in the blob in one kernel call; logged rows
 * one by one (f32) or in batches through the rows kernel (int8). Returns the
 * saturation flag (int8). */
static int pg_forward(kl_model_t *m, kl_op_t *op, const kl_requant_t *rq)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	const uint32_t n_in = kl_tsize(x), n_out = kl_tsize(&m->tensors[op->out]);
	uint8_t *y = m->tensors[op->out].data;
	int sat = 0;
	for (uint32_t r = 0; r < n_out;) {
		uint32_t k = 1;
		if (op->rows[r] == NULL) {
			while (r + k < n_out && op->rows[r + k] == NULL) {
				k++;
			}
		}
		const void *w = pg_row(m, op, r), *b = pg_bias(m, op, r);
		if (m->dtype == KL_DTYPE_F32) {
			kl_fully_connected_f32(x->data, w, b, (float *)(void *)y + r, (int)n_in, (int)k,
					       kl_kernel_act(op->act));
		} else if (k > 1u) {
			sat |= kl_fully_connected_s8(x->data, x->zp, w, b, rq, (int8_t *)(void *)y + r,
						     (int)n_in, (int)k, m->scratch);
		} else { /* logged rows (and lone blob rows): a batch, the input centred once */
			const int8_t *rows[KL_FC_ROWS_MAX];
			int32_t bias[KL_FC_ROWS_MAX];
			k = 0;
			while (k < KL_FC_ROWS_MAX && r + k < n_out &&
			       (op->rows[r + k] != NULL || k == 0u)) {
				rows[k] = (const int8_t *)pg_row(m, op, r + k);
				memcpy(&bias[k], pg_bias(m, op, r + k), 4u);
				k++;
			}
			sat |= kl_fully_connected_rows_s8(x->data, x->zp, rows, bias, rq,
							  (int8_t *)(void *)y + r, (int)n_in, (int)k,
							  m->scratch);
		}
		r += k;
	}
	return sat;
}

/* acc += g * row (f32), the input gradient's sums one row at a time */
static void pg_axpy_f32(float *acc, const uint8_t *row, float g, uint32_t n)
{
	const float *w = (const float *)(const void *)row;
	for (uint32_t j = 0; j < n; j++) {
		acc[j] += w[j] * g;
	}
}

static void pg_axpy_s8(int32_t *acc, const uint8_t *row, int32_t g, uint32_t n)
{
	const int8_t *w = (const int8_t *)row;
	for (uint32_t j = 0; j < n; j++) {
		acc[j] += (int32_t)w[j] * g;
	}
}

/* Input gradient dx = W^T dy, row by row (rows with dy = 0 skipped): f32
 * into the scratch as floats, s8 as int32 sums, then handed on as the dense
 * kernels' results are. */
static void pg_dx(kl_model_t *m, const kl_op_t *op, const void *dy, int ey)
{
	const uint32_t n_in = kl_tsize(&m->tensors[op->in0]);
	const uint32_t n_out = kl_tsize(&m->tensors[op->out]);
	const int f32 = m->dtype == KL_DTYPE_F32;
	memset(m->scratch, 0, (size_t)n_in * 4u); /* 0.0f and 0 alike */
	for (uint32_t r = 0; r < n_out; r++) {
		if (f32 && ((const float *)dy)[r] != 0.0f) {
			pg_axpy_f32(m->scratch, pg_row(m, op, r), ((const float *)dy)[r], n_in);
		} else if (!f32 && ((const int8_t *)dy)[r] != 0) {
			pg_axpy_s8(m->scratch, pg_row(m, op, r), ((const int8_t *)dy)[r], n_in);
		}
	}
	if (f32) {
		kl_give_f32(m, op->in0);
	} else {
		kl_give_s8(m, op->in0, op->w_exp + ey);
	}
}

/* rows a step of this op writes, at most */
static uint32_t pg_rows_per_step(const kl_model_t *m, const kl_op_t *op)
{
	const uint32_t n = kl_tsize(&m->tensors[op->out]);
	return m->upd_policy == KL_UPDATE_CHANNEL_NORM ? upd_count(n, m->upd_frac) : n;
}

/* a commit record's payload: an int8 model's training state besides the
 * weights, so that a reboot goes on exactly where the step left it: the
 * rounding dither (u32) and the activation exponents (a byte per tensor) */
static uint32_t pg_commit_len(const kl_model_t *m)
{
	return m->dtype == KL_DTYPE_S8 ? 4u + m->n_tensors : 0u;
}

/* After a step (and its range adaptation): close its transaction. */
static int pg_commit(kl_model_t *m)
{
	uint8_t state[4u + KL_MAX_TENSORS];
	const uint32_t n = pg_commit_len(m);
	if (n != 0u) {
		kl_wr32(state, m->dither);
		for (uint32_t t = 0; t < m->n_tensors; t++) {
			state[4u + t] = (uint8_t)m->tensors[t].exp;
		}
	}
	return kl_wlog_commit(m->wlog, state, n);
}

/* Before a step's updates: room in the log for every row it may write, or
 * a fold first. */
static int pg_prepare(kl_model_t *m)
{
	kl_wlog_t *lg = m->wlog;
	if (lg == NULL) {
		return KL_EINVAL; /* a paged model trains with a weight log */
	}
	uint64_t need = 0;
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		if (kl_paged_op(op) && kl_trainable(op)) {
			need += (uint64_t)pg_rows_per_step(m, op) * kl_wlog_span(lg, pg_payload(m, op));
		}
	}
	need += kl_wlog_span(lg, pg_commit_len(m)) + kl_wlog_span(lg, 0u); /* and a reset's */
	if (kl_wlog_room(lg, need)) {
		return KL_OK;
	}
	if (lg->slots == NULL) {
		return KL_ENOSPC;
	}
	int err = kl_model_fold(m);
	if (err == KL_OK) { /* the state the new generation starts from (int8: the dither) */
		err = pg_commit(m);
	}
	if (err != KL_OK) {
		return err;
	}
	return kl_wlog_room(lg, need) ? KL_OK : KL_ENOSPC;
}

/* |dy| as an unsigned key that orders like dy^2 (the Deutel score of a row
 * of the fused update, see top_channels_dy_s8) */
static uint32_t pg_key(const kl_model_t *m, const void *dy, uint32_t i)
{
	if (m->dtype == KL_DTYPE_S8) {
		const int32_t v = ((const int8_t *)dy)[i];
		return (uint32_t)(v < 0 ? -v : v);
	}
	uint32_t u;
	memcpy(&u, (const float *)dy + i, 4u);
	return u & 0x7FFFFFFFu;
}

typedef struct {
	const kl_model_t *m;
	const void *dy;
} pg_keys_t;

static uint64_t pg_key_of(const void *ctx, uint32_t i)
{
	const pg_keys_t *k = ctx;
	return pg_key(k->m, k->dy, i);
}

/* Elements [j0, j0 + n) of row r after the fused SGD step, into chunk (the
 * old ones read in place, the step applied in the buffer). */
static void pg_new_chunk(kl_model_t *m, const kl_op_t *op, uint32_t r, uint32_t j0, uint32_t n,
			 uint32_t *chunk, const void *dyv, int ey)
{
	const kl_tensor_t *x = &m->tensors[op->in0];
	const uint32_t n_in = kl_tsize(x), es = pg_es(m);
	memcpy(chunk, pg_row(m, op, r) + j0 * es, n * es);
	if (m->dtype == KL_DTYPE_F32) {
		float b_unused = 0.0f;
		kl_fully_connected_sgd_f32((float *)(void *)chunk, &b_unused, NULL, NULL,
					   (const float *)dyv + r, (const float *)x->data + j0, m->lr,
					   0.0f, (int)n, 1);
	} else {
		int32_t b_unused = 0;
		uint32_t d = m->dither + (r * n_in + j0) * KL_WEYL;
		kl_fully_connected_sgd_s8((int8_t *)(void *)chunk, &b_unused, (const int8_t *)dyv + r,
					  (const int8_t *)x->data + j0, x->zp, m->lr_q,
					  op->w_exp + KL_LR_FRAC_BITS - ey - x->exp,
					  op->b_exp + KL_LR_FRAC_BITS - ey, &d, (int)n, 1,
					  kl_upd_scratch(m, x));
	}
}

/* row r's bias after the step (the bias gradient is dy_r: the SGD steps of
 * kl_apply_f32 / kl_apply_s8) */
static int32_t pg_new_bias(const kl_model_t *m, const kl_op_t *op, uint32_t r, const void *dyv,
			   int ey)
{
	int32_t bias;
	memcpy(&bias, pg_bias(m, op, r), 4u);
	if (m->dtype == KL_DTYPE_F32) {
		float b;
		memcpy(&b, &bias, 4u);
		kl_sgd_f32(&b, NULL, (const float *)dyv + r, m->lr, 0.0f, 1);
		memcpy(&bias, &b, 4u);
	} else {
		const int32_t g = ((const int8_t *)dyv)[r];
		kl_sgd_bias_s8(&bias, &g, m->lr_q, op->b_exp + KL_LR_FRAC_BITS - ey, 1);
	}
	return bias;
}

/* Row r's step into the log, a chunk at a time: the new values computed
 * once. An int8 row's record begins at its first changed chunk (the chunks
 * before it are the old ones, appended as they are); a row the rounded step
 * leaves as it was gets no record. */
static int pg_update_row(kl_model_t *m, int op_i, kl_op_t *op, uint32_t r, const void *dyv,
			 int ey)
{
	kl_wlog_t *lg = m->wlog;
	const uint32_t n_in = kl_tsize(&m->tensors[op->in0]), es = pg_es(m);
	const uint32_t rb = pg_row_bytes(m, op);
	const uint8_t *old = pg_row(m, op, r);
	int32_t bias, old_b;
	bias = pg_new_bias(m, op, r, dyv, ey);
	memcpy(&old_b, pg_bias(m, op, r), 4u);
	/* float steps change the row: no comparing */
	int started = m->dtype == KL_DTYPE_F32 || bias != old_b, err = KL_OK;
	if (started) {
		err = kl_wlog_begin(lg, (uint16_t)op_i, (uint16_t)r, pg_payload(m, op));
	}
	uint32_t chunk[PG_CHUNK / 4u];
	for (uint32_t j0 = 0; err == KL_OK && j0 < n_in; j0 += PG_CHUNK / es) {
		const uint32_t n = n_in - j0 < PG_CHUNK / es ? n_in - j0 : PG_CHUNK / es;
		pg_new_chunk(m, op, r, j0, n, chunk, dyv, ey);
		if (!started) {
			if (memcmp(chunk, old + j0 * es, n * es) == 0) {
				continue;
			}
			err = kl_wlog_begin(lg, (uint16_t)op_i, (uint16_t)r, pg_payload(m, op));
			if (err == KL_OK && j0 != 0u) {
				err = kl_wlog_append(lg, old, j0 * es); /* unchanged so far */
			}
			started = 1;
		}
		if (err == KL_OK) {
			err = kl_wlog_append(lg, (const uint8_t *)chunk, n * es);
		}
	}
	if (!started || err != KL_OK) {
		return err; /* unchanged: nothing written */
	}
	uint8_t tail[8] = {0};
	const uint32_t pad = pg_payload(m, op) - 4u - rb;
	memcpy(tail + pad, &bias, 4u);
	err = kl_wlog_append(lg, tail, pad + 4u);
	const uint8_t *p = NULL;
	if (err == KL_OK) {
		err = kl_wlog_end(lg, &p);
	}
	if (err == KL_OK) {
		op->rows[r] = p;
	}
	return err;
}

/* The fused update of a paged dense op: every row, or the rows with the
 * largest |dy| (Deutel; ties to the lower index, as top_channels_dy_s8), each
 * written to the log when its step is not zero. Selection costs O(n_out)
 * and no memory, the writing the selected rows. */
static void pg_update(kl_model_t *m, kl_op_t *op, const void *dy, int ey)
{
	const int op_i = (int)(op - m->ops);
	const uint32_t n_out = kl_tsize(&m->tensors[op->out]);
	const uint32_t n_in = kl_tsize(&m->tensors[op->in0]);
	const uint32_t k = pg_rows_per_step(m, op);
	uint32_t thr = 0, ties = 0, nonzero = 0;
	for (uint32_t i = 0; i < n_out && k < n_out; i++) {
		nonzero += pg_key(m, dy, i) != 0u;
	}
	if (k < n_out && nonzero > k) { /* the k-th largest |dy| by radix selection: no buffer */
		const pg_keys_t keys = {m, dy};
		uint32_t gt = 0;
		thr = (uint32_t)kl_kth_largest(pg_key_of, &keys, n_out, k, 4);
		for (uint32_t i = 0; i < n_out; i++) {
			gt += pg_key(m, dy, i) > thr;
		}
		ties = k - gt;
	}
	/* every row with a gradient among the k: the zero rows it would add do not step */
	const int all_nonzero = k < n_out && nonzero <= k;
	for (uint32_t r = 0; r < n_out && m->pg_err == KL_OK; r++) {
		if (k < n_out) {
			const uint32_t key = pg_key(m, dy, r);
			if (all_nonzero ? key == 0u : key < thr || (key == thr && ties == 0u)) {
				continue;
			}
			ties -= !all_nonzero && key == thr;
		}
		const int zero = m->dtype == KL_DTYPE_F32
					 ? ((const float *)dy)[r] == 0.0f
					 : (int32_t)((const int8_t *)dy)[r] * m->lr_q == 0;
		if (!zero) {
			m->pg_err = pg_update_row(m, op_i, op, r, dy, ey);
		}
	}
	if (m->dtype == KL_DTYPE_S8) {
		m->dither += op->n_w * KL_WEYL;
	}
	m->upd_touched += (uint64_t)k * n_in;
	m->upd_weights += op->n_w;
}

/* ---- attach, reset, fold ------------------------------------------------------- */
static void pg_clear_rows(kl_model_t *m);

/* the blob's weights and int8 state: no logged row, the blob's exponents,
 * the dither from the seed */
static void pg_reset_state(kl_model_t *m)
{
	pg_clear_rows(m);
	if (m->dtype == KL_DTYPE_S8) {
		const uint32_t tens = kl_rd32(m->blob + KL_BH_TENSORS);
		for (uint32_t t = 0; t < m->n_tensors; t++) {
			m->tensors[t].exp = (int8_t)m->blob[tens + t * KL_BLOB_TENSOR_SIZE + KL_BT_EXP];
		}
		m->dither = m->seed;
	}
}

int kl_model_discard_log(kl_model_t *m)
{
	if (m == NULL || m->wlog == NULL) {
		return KL_EINVAL;
	}
	const int err = kl_wlog_reset(m->wlog);
	if (err == KL_OK) {
		pg_reset_state(m);
	}
	return err;
}
static int pg_apply(void *ctx, uint16_t op_i, uint16_t row, const uint8_t *payload, uint32_t len)
{
	kl_model_t *m = ctx;
	if (op_i == KL_WLOG_RESET) {
		pg_reset_state(m);
		return len == 0u ? 0 : -1;
	}
	if (op_i == KL_WLOG_COMMIT) { /* the step's dither and activation exponents */
		if (len != pg_commit_len(m)) {
			return -1;
		}
		for (uint32_t t = 4u; t < len; t++) {
			if ((int8_t)payload[t] < KL_EXP_MIN || (int8_t)payload[t] > KL_EXP_MAX) {
				return -1;
			}
		}
		if (len != 0u) {
			m->dither = kl_rd32(payload);
		}
		for (uint32_t t = 4u; t < len; t++) {
			m->tensors[t - 4u].exp = (int8_t)payload[t];
		}
		return 0;
	}
	if (op_i >= m->n_ops || !kl_paged_op(&m->ops[op_i])) {
		return -1;
	}
	kl_op_t *op = &m->ops[op_i];
	if (row >= kl_tsize(&m->tensors[op->out]) || len != pg_payload(m, op) ||
	    ((uintptr_t)payload & 3u) != 0u) {
		return -1;
	}
	op->rows[row] = payload;
	return 0;
}

static void pg_clear_rows(kl_model_t *m)
{
	for (int i = 0; i < m->n_ops; i++) {
		kl_op_t *op = &m->ops[i];
		if (kl_paged_op(op)) {
			memset(op->rows, 0, sizeof(op->rows[0]) * kl_tsize(&m->tensors[op->out]));
		}
	}
}

int kl_model_attach_wlog(kl_model_t *m, kl_wlog_t *lg)
{
	if (m == NULL || lg == NULL || m->blob == NULL || !m->paged ||
	    lg->blob_crc != kl_rd32(m->blob + KL_BH_CRC)) {
		return KL_EINVAL;
	}
	pg_clear_rows(m);
	const int err = kl_wlog_mount(lg, pg_apply, m);
	m->wlog = err == KL_OK ? lg : NULL;
	return err;
}

/* copy the part of [lo, lo + len) of src that falls in the chunk [off, off + n) */
static void pg_overlay(uint8_t *buf, uint32_t off, uint32_t n, uint32_t lo, uint32_t len,
		       const uint8_t *src)
{
	const uint32_t a = off > lo ? off : lo;
	const uint32_t z = off + n < lo + len ? off + n : lo + len;
	if (a < z) {
		memcpy(buf + (a - off), src + (a - lo), z - a);
	}
}

/* n bytes of the blob at off as the model has them now: the blob's, with the
 * int8 activation exponents, the arena copies of trained weights and the
 * logged rows of paged ops over them */
static void pg_merged(const kl_model_t *m, uint32_t off, uint8_t *buf, uint32_t n)
{
	const uint8_t *blob = m->blob;
	memcpy(buf, blob + off, n);
	if (m->dtype == KL_DTYPE_S8) {
		const uint32_t tens = kl_rd32(blob + KL_BH_TENSORS);
		for (uint32_t t = 0; t < m->n_tensors; t++) {
			const uint8_t e = (uint8_t)m->tensors[t].exp;
			pg_overlay(buf, off, n, tens + t * KL_BLOB_TENSOR_SIZE + KL_BT_EXP, 1u, &e);
		}
	}
	const uint32_t ops = kl_rd32(blob + KL_BH_OPS), es = pg_es(m);
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		if (op->n_w == 0u) {
			continue;
		}
		const uint8_t *r = blob + ops + (uint32_t)i * KL_BLOB_OP_SIZE;
		const uint32_t w_off = kl_rd32(r + KL_BO_W_OFF), b_off = kl_rd32(r + KL_BO_B_OFF);
		const uint32_t n_b = kl_rd32(r + KL_BO_B_SIZE) / 4u;
		if (!kl_paged_op(op)) { /* trained in the arena: its copies (a frozen op reads the blob) */
			if (kl_paired(op)) { /* in the blob's layout */
				const uint32_t lo = w_off > off ? w_off : off;
				const uint32_t hi = w_off + op->n_w < off + n ? w_off + op->n_w : off + n;
				if (lo < hi) {
					(void)kl_model_op_weights(m, i, lo - w_off, buf + (lo - off), hi - lo);
				}
			} else if ((const uint8_t *)op->w < blob ||
				   (const uint8_t *)op->w >= blob + m->blob_len) {
				pg_overlay(buf, off, n, w_off, op->n_w * es, op->w);
			}
			if ((const uint8_t *)op->b < blob || (const uint8_t *)op->b >= blob + m->blob_len) {
				pg_overlay(buf, off, n, b_off, n_b * 4u, op->b);
			}
			continue;
		}
		const uint32_t rb = pg_row_bytes(m, op);
		for (int part = 0; part < 2; part++) { /* weights, biases: the logged rows' */
			const uint32_t lo = part == 0 ? w_off : b_off, unit = part == 0 ? rb : 4u;
			if (off + n <= lo || off >= lo + unit * n_b) {
				continue;
			}
			for (uint32_t k = (off > lo ? off - lo : 0u) / unit; k < n_b && lo + k * unit < off + n;
			     k++) {
				if (op->rows[k] != NULL) {
					pg_overlay(buf, off, n, lo + k * unit, unit,
						   part == 0 ? op->rows[k] : (const uint8_t *)pg_bias(m, op, k));
				}
			}
		}
	}
}

int kl_model_blob_read(const kl_model_t *m, uint32_t off, uint8_t *buf, uint32_t n)
{
	if (m == NULL || m->blob == NULL || (buf == NULL && n != 0u) || off > m->blob_len ||
	    n > m->blob_len - off) {
		return KL_EINVAL;
	}
	if (n != 0u) {
		pg_merged(m, off, buf, n);
	}
	return KL_OK;
}

/* every pointer into the old blob moves by the same amount into the new one */
static void pg_repoint(kl_model_t *m, const uint8_t *nb)
{
	const uint8_t *ob = m->blob;
	const uint8_t *oe = ob + m->blob_len;
#define PG_MOVE(p)                                                                          \
	do {                                                                                \
		if ((const uint8_t *)(p) >= ob && (const uint8_t *)(p) < oe) {              \
			(p) = (void *)(uintptr_t)(nb + ((const uint8_t *)(p) - ob));         \
		}                                                                           \
	} while (0)
	for (int i = 0; i < m->n_ops; i++) {
		PG_MOVE(m->ops[i].w);
		PG_MOVE(m->ops[i].b);
	}
	if (m->lut != NULL) {
		m->lut = (const uint16_t *)(const void *)(nb + ((const uint8_t *)m->lut - ob));
	}
#undef PG_MOVE
	m->blob = nb;
}

int kl_model_fold(kl_model_t *m)
{
	if (m == NULL || m->wlog == NULL) {
		return KL_EINVAL;
	}
	kl_wlog_t *lg = m->wlog;
	kl_slots_t *g = lg->slots;
	if (g == NULL) {
		return KL_ENOTSUP;
	}
	if (g->writing) {
		return KL_EBUSY; /* a LOAD is writing a generation: the fold would end it */
	}
	uint8_t buf[PG_CHUNK];
	uint32_t crc = 0;
	for (uint32_t off = KL_BLOB_CRC_START; off < m->blob_len; off += PG_CHUNK) {
		const uint32_t n = m->blob_len - off < PG_CHUNK ? m->blob_len - off : PG_CHUNK;
		pg_merged(m, off, buf, n);
		crc = kl_crc32(crc, buf, n);
	}
	int err = kl_slots_begin(g, m->blob_len);
	for (uint32_t off = 0; err == KL_OK && off < m->blob_len; off += PG_CHUNK) {
		const uint32_t n = m->blob_len - off < PG_CHUNK ? m->blob_len - off : PG_CHUNK;
		pg_merged(m, off, buf, n);
		if (off == 0u) {
			kl_wr32(buf + KL_BH_CRC, crc);
		}
		err = kl_slots_write(g, buf, n);
	}
	if (err == KL_OK) {
		err = kl_slots_end(g, kl_slots_written_crc(g));
	}
	if (err != KL_OK) {
		kl_slots_abort(g);
		return err; /* the old generation and the log stand */
	}
	uint32_t len = 0;
	const uint8_t *nb = kl_slots_active(g, &len);
	if (nb == NULL) {
		return KL_EINVAL; /* not memory-mapped: kl_wlog_open refuses such a store */
	}
	kl_slots_pin(g, 1);
	pg_repoint(m, nb);
	pg_clear_rows(m);
	kl_wlog_restart(lg, g->active.seq, crc);
	lg->folds++;
	return KL_OK;
}
