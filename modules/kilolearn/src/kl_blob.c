/* Defensive parser of the .klm model blob (format version 2.2): every size,
 * offset, tensor id and shape, and the optional schedule, is checked before
 * the engine touches it. */
#include <string.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_kernels.h"
#include "kl_blob_read.h"

static int exp_ok(int8_t e)
{
	return e >= KL_EXP_MIN && e <= KL_EXP_MAX;
}

/* The int8 softmax table is read as exp(-d 2^lut_exp) in Q15: T[0] = 2^15 (the
 * largest logit's share, the divisor's floor in kl_softmax_ce_s8) and never
 * growing with d. Any other table is not one the exporter makes, and a zero
 * T[0] would divide by zero. */
static int lut_ok(const uint8_t *lut)
{
	uint32_t prev = kl_rd16(lut);
	if (prev != 32768u) {
		return 0;
	}
	for (uint32_t d = 1; d < KL_BLOB_LUT_ENTRIES; d++) {
		const uint32_t v = kl_rd16(lut + 2u * d);
		if (v > prev) {
			return 0;
		}
		prev = v;
	}
	return 1;
}

/* [off, off + size) inside [lo, total), 4-byte aligned */
static int range_ok(uint32_t off, uint64_t size, uint32_t lo, uint32_t total)
{
	return (off % 4u) == 0u && off >= lo && off <= total && size <= (uint64_t)(total - off);
}

static uint64_t tensor_size(const uint8_t *t)
{
	return (uint64_t)kl_rd16(t + KL_BT_H) * kl_rd16(t + KL_BT_W) * kl_rd16(t + KL_BT_C);
}

/* expected output extent of a window op along one axis, or 0 if invalid */
static uint32_t out_extent(uint32_t in, uint32_t k, uint32_t stride, uint32_t p0, uint32_t p1)
{
	if (k == 0u || stride == 0u || p0 >= k || p1 >= k || in + p0 + p1 < k) {
		return 0u;
	}
	return (in + p0 + p1 - k) / stride + 1u;
}

static int check_op(const uint8_t *blob, const uint8_t *o, uint32_t n_t, uint32_t t_off,
		    uint32_t data_lo, uint32_t total, int s8, uint8_t *produced)
{
	const uint8_t kind = o[KL_BO_KIND];
	const uint32_t in0 = kl_rd16(o + KL_BO_IN0);
	const uint32_t in1 = kl_rd16(o + KL_BO_IN1);
	const uint32_t out = kl_rd16(o + KL_BO_OUT);
	if (kind < KL_OP_DENSE || kind > KL_OP_ADD || o[KL_BO_ACT] > KL_ACT_LEAKY_RELU ||
	    (o[KL_BO_ACT] > KL_ACT_RELU6 && kind > KL_OP_DWCONV) ||
	    (o[KL_BO_FLAGS] & ~(KL_OP_TRAINABLE | KL_OP_BIAS_ONLY | KL_OP_PAGED)) != 0u ||
	    o[KL_BO_FLAGS] == KL_OP_BIAS_ONLY ||
	    ((o[KL_BO_FLAGS] & KL_OP_PAGED) != 0u &&
	     (kind != KL_OP_DENSE || o[KL_BO_FLAGS] != (KL_OP_TRAINABLE | KL_OP_PAGED))) ||
	    in0 >= n_t || out >= n_t ||
	    !(produced[in0 >> 3] & (1u << (in0 & 7u))) || (produced[out >> 3] & (1u << (out & 7u)))) {
		return KL_ECORRUPT;
	}
	if (kind == KL_OP_ADD) {
		if (in1 >= n_t || !(produced[in1 >> 3] & (1u << (in1 & 7u)))) {
			return KL_ECORRUPT;
		}
	} else if (in1 != KL_BLOB_NO_TENSOR) {
		return KL_ECORRUPT;
	}
	produced[out >> 3] |= (uint8_t)(1u << (out & 7u));
	const uint8_t *ti = blob + t_off + in0 * KL_BLOB_TENSOR_SIZE;
	const uint8_t *to = blob + t_off + out * KL_BLOB_TENSOR_SIZE;
	const uint32_t h = kl_rd16(ti + KL_BT_H), w = kl_rd16(ti + KL_BT_W), c = kl_rd16(ti + KL_BT_C);
	const uint32_t ho = kl_rd16(to + KL_BT_H), wo = kl_rd16(to + KL_BT_W);
	const uint32_t co = kl_rd16(to + KL_BT_C);
	const uint32_t kh = o[KL_BO_KH], kw = o[KL_BO_KW], st = o[KL_BO_STRIDE];
	const uint8_t *pad = o + KL_BO_PAD;
	const int has_params = kind <= KL_OP_DWCONV;
	/* int8 sigmoid and tanh write outputs of a fixed scale (their tables') */
	if (s8 && ((o[KL_BO_ACT] == KL_ACT_SIGMOID &&
		    ((int8_t)to[KL_BT_EXP] != KL_SIGMOID_EXP || (int8_t)to[KL_BT_ZP] != KL_SIGMOID_ZP)) ||
		   (o[KL_BO_ACT] == KL_ACT_TANH &&
		    ((int8_t)to[KL_BT_EXP] != KL_TANH_EXP || to[KL_BT_ZP] != 0u)))) {
		return KL_ECORRUPT;
	}
	const int window = kind != KL_OP_DENSE && kind != KL_OP_ADD;
	if (window && (ho != out_extent(h, kh, st, pad[0], pad[2]) ||
		       wo != out_extent(w, kw, st, pad[1], pad[3]))) {
		return KL_ECORRUPT;
	}
	if (kind >= KL_OP_DWCONV && co != c) { /* depthwise, pooling and add keep channels */
		return KL_ECORRUPT;
	}
	if ((kind == KL_OP_AVGPOOL || kind == KL_OP_MAXPOOL) &&
	    (pad[0] | pad[1] | pad[2] | pad[3]) != 0u) {
		return KL_ECORRUPT;
	}
	if (kind == KL_OP_ADD) {
		const uint8_t *t1 = blob + t_off + in1 * KL_BLOB_TENSOR_SIZE;
		if (kl_rd16(t1 + KL_BT_H) != h || kl_rd16(t1 + KL_BT_W) != w ||
		    kl_rd16(t1 + KL_BT_C) != c || ho != h || wo != w) {
			return KL_ECORRUPT;
		}
	}
	uint64_t n_w = 0;
	if (kind == KL_OP_DENSE) {
		if (ho != 1u || wo != 1u) {
			return KL_ECORRUPT;
		}
		n_w = tensor_size(ti) * co;
	} else if (kind == KL_OP_CONV) {
		n_w = (uint64_t)co * kh * kw * c;
	} else if (kind == KL_OP_DWCONV) {
		n_w = (uint64_t)kh * kw * c;
	}
	const uint32_t w_off = kl_rd32(o + KL_BO_W_OFF), w_size = kl_rd32(o + KL_BO_W_SIZE);
	const uint32_t b_off = kl_rd32(o + KL_BO_B_OFF), b_size = kl_rd32(o + KL_BO_B_SIZE);
	if (!has_params) { /* and so nothing to train */
		return (w_off | w_size | b_off | b_size | o[KL_BO_FLAGS]) == 0u ? KL_OK : KL_ECORRUPT;
	}
	if (n_w > 0x7FFFFFFFu || w_size != n_w * (s8 ? 1u : 4u) || b_size != co * 4u ||
	    !range_ok(w_off, w_size, data_lo, total) || !range_ok(b_off, b_size, data_lo, total)) {
		return KL_ECORRUPT;
	}
	if (s8 && (!exp_ok((int8_t)o[KL_BO_W_EXP]) || !exp_ok((int8_t)o[KL_BO_B_EXP]))) {
		return KL_ECORRUPT;
	}
	return KL_OK;
}

/* ---- schedule section (2.1) ---------------------------------------------------- */

#define BITS_BYTES (KL_MAX_TENSORS / 8u)

typedef struct {
	uint8_t need_grad[BITS_BYTES]; /* backprop needs the tensor's gradient */
	uint8_t users1[BITS_BYTES];    /* read by at least one op */
	uint8_t users2[BITS_BYTES];    /* read by two or more */
	uint8_t act[BITS_BYTES];       /* made by an op with an activation */
	uint8_t data[BITS_BYTES];      /* activations live */
	uint8_t grad[BITS_BYTES];      /* gradient live */
} sched_state_t;

static int bit(const uint8_t *b, uint32_t k)
{
	return (b[k >> 3] >> (k & 7u)) & 1u;
}

static void set_bit(uint8_t *b, uint32_t k, int v)
{
	if (v) {
		b[k >> 3] |= (uint8_t)(1u << (k & 7u));
	} else {
		b[k >> 3] &= (uint8_t)~(1u << (k & 7u));
	}
}

/* Backward of an s8 op masks a single-use input's accumulators with the
 * input's activations (model/kl_backward.c kl_give_s8). */
static int mask_on_give(const sched_state_t *st, uint32_t t, uint32_t input, int s8)
{
	return s8 && t != input && !bit(st->users2, t) && bit(st->act, t);
}

/* Is every tensor the backward step of op o reads live? (mirror of
 * planner.MemModel.bwd_reads: keep the two identical) */
static int bwd_reads_live(const sched_state_t *st, const uint8_t *o, uint32_t input, int s8)
{
	const uint32_t in0 = kl_rd16(o + KL_BO_IN0), out = kl_rd16(o + KL_BO_OUT);
	/* the output masks the gradient, unless its single consumer masked it */
	const int masked = bit(st->users1, out) && mask_on_give(st, out, input, s8);
	if (o[KL_BO_ACT] != KL_ACT_NONE && !masked && !bit(st->data, out)) {
		return 0;
	}
	const uint32_t ins[2] = {in0, kl_rd16(o + KL_BO_IN1)};
	if (o[KL_BO_KIND] != KL_OP_ADD) {
		const int ng = bit(st->need_grad, in0);
		const int reads = (o[KL_BO_FLAGS] & KL_OP_TRAINABLE) != 0u ||
				  (o[KL_BO_KIND] == KL_OP_MAXPOOL && ng) ||
				  (ng && mask_on_give(st, in0, input, s8));
		return !reads || in0 == input || bit(st->data, in0);
	}
	for (int k = 0; k < 2; k++) {
		const uint32_t t = ins[k];
		if (bit(st->need_grad, t) && mask_on_give(st, t, input, s8) && t != input &&
		    !bit(st->data, t)) {
			return 0;
		}
	}
	return 1;
}

/* Does the buffer [off, off + size) lie inside the region, and inside one of
 * its parts when it is split at split (not 0)? */
static int in_region(uint32_t off, uint64_t size, uint32_t region, uint32_t split)
{
	if (off > region || size > region - off) {
		return 0;
	}
	return split == 0u || off >= split || size <= split - off;
}

/* The schedule: every step's ids in range, every buffer inside the region,
 * every step reads only live buffers, backward steps last op first and
 * recomputations only before the backward frontier, one loss step, the
 * logits live at the end. */
static int check_schedule(const uint8_t *blob, uint32_t sched, uint32_t data_lo, uint32_t total,
			  int s8)
{
	const uint32_t n_t = kl_rd16(blob + KL_BH_N_TENSORS);
	const uint32_t n_ops = kl_rd16(blob + KL_BH_N_OPS);
	const uint32_t input = kl_rd16(blob + KL_BH_INPUT);
	const uint32_t output = kl_rd16(blob + KL_BH_OUTPUT);
	const uint8_t *t_tab = blob + kl_rd32(blob + KL_BH_TENSORS);
	const uint8_t *o_tab = blob + kl_rd32(blob + KL_BH_OPS);
	const uint32_t head = kl_sched_header_size(blob);
	if (!range_ok(sched, head, data_lo, total)) {
		return KL_ECORRUPT;
	}
	const uint32_t n_steps = kl_rd32(blob + sched + KL_SCHED_N_STEPS);
	const uint32_t region = kl_rd32(blob + sched + KL_SCHED_REGION);
	if (n_steps == 0u || n_steps > KL_SCHED_MAX_STEPS || region > 0x7FFFFFFFu ||
	    !range_ok(sched, head + (uint64_t)n_steps * KL_STEP_SIZE, data_lo, total)) {
		return KL_ECORRUPT;
	}
	/* 2.7: the region in two parts at the boundary split (0: one part) */
	const uint32_t split = head > KL_SCHED_HEADER_SIZE ? kl_rd32(blob + sched + KL_SCHED_SPLIT)
							   : 0u;
	const uint32_t rest = head > KL_SCHED_HEADER_SIZE
				      ? kl_rd32(blob + sched + KL_SCHED_SPLIT_REST)
				      : 0u;
	if (split == 0u ? rest != 0u
			: (split % 8u) != 0u || split >= region || rest != region - split) {
		return KL_ECORRUPT;
	}
	sched_state_t st;
	memset(&st, 0, sizeof(st));
	for (uint32_t i = 0; i < n_ops; i++) {
		const uint8_t *o = o_tab + i * KL_BLOB_OP_SIZE;
		const uint32_t in0 = kl_rd16(o + KL_BO_IN0), out = kl_rd16(o + KL_BO_OUT);
		const int add = o[KL_BO_KIND] == KL_OP_ADD;
		const uint32_t in1 = add ? kl_rd16(o + KL_BO_IN1) : in0;
		for (int k = 0; k < (add ? 2 : 1); k++) {
			const uint32_t t = k == 0 ? in0 : in1;
			set_bit(st.users2, t, bit(st.users2, t) || bit(st.users1, t));
			set_bit(st.users1, t, 1);
		}
		/* ReLU and ReLU6 mask on give; the others' derivatives need the output */
		set_bit(st.act, out, o[KL_BO_ACT] == KL_ACT_RELU || o[KL_BO_ACT] == KL_ACT_RELU6);
		set_bit(st.need_grad, out,
			(o[KL_BO_FLAGS] & KL_OP_TRAINABLE) != 0u || bit(st.need_grad, in0) ||
				(add && bit(st.need_grad, in1)));
	}
	const uint64_t es = s8 ? 1u : 4u;
	uint32_t n_loss = 0;
	uint32_t frontier = n_ops; /* ops at or after it have had their backward step */
	const uint8_t *sp = blob + sched + head;
	for (uint32_t k = 0; k < n_steps; k++, sp += KL_STEP_SIZE) {
		const uint32_t kind = sp[KL_SS_KIND], idx = kl_rd16(sp + KL_SS_INDEX);
		const uint32_t off = kl_rd32(sp + KL_SS_OFFSET);
		if (sp[KL_SS_FLAGS] & ~(kind == KL_STEP_FWD	? KL_STEP_RECOMPUTE
					: kind == KL_STEP_BWD ? KL_STEP_IN_PLACE | KL_STEP_COMPACT
								: 0u)) {
			return KL_ECORRUPT;
		}
		if (kind == KL_STEP_FWD || kind == KL_STEP_BWD) {
			if (idx >= n_ops) {
				return KL_ECORRUPT;
			}
			const uint8_t *o = o_tab + idx * KL_BLOB_OP_SIZE;
			const uint32_t in0 = kl_rd16(o + KL_BO_IN0), out = kl_rd16(o + KL_BO_OUT);
			const int add = o[KL_BO_KIND] == KL_OP_ADD;
			const uint32_t in1 = add ? kl_rd16(o + KL_BO_IN1) : in0;
			if (kind == KL_STEP_FWD) {
				const uint64_t size = tensor_size(t_tab + out * KL_BLOB_TENSOR_SIZE) * es;
				if (idx >= frontier || bit(st.data, out) || (off % 4u) != 0u ||
				    !in_region(off, size, region, split) ||
				    (in0 != input && !bit(st.data, in0)) ||
				    (in1 != input && !bit(st.data, in1))) {
					return KL_ECORRUPT;
				}
				set_bit(st.data, out, 1);
				continue;
			}
			/* the step's int32 scratch (model/kl_model_init.c op_scratch, training) */
			const int in_place = (sp[KL_SS_FLAGS] & KL_STEP_IN_PLACE) != 0u;
			if (in_place && (add || !s8 || !bit(st.need_grad, in0))) {
				return KL_ECORRUPT;
			}
			const int compact = (sp[KL_SS_FLAGS] & KL_STEP_COMPACT) != 0u;
			const uint8_t *tx = t_tab + in0 * KL_BLOB_TENSOR_SIZE;
			const uint64_t nx = tensor_size(tx);
			const uint64_t ny = tensor_size(t_tab + out * KL_BLOB_TENSOR_SIZE);
			const uint64_t co = kl_rd16(t_tab + out * KL_BLOB_TENSOR_SIZE + KL_BT_C);
			const int dense = o[KL_BO_KIND] == KL_OP_DENSE;
			const int conv = o[KL_BO_KIND] == KL_OP_CONV || o[KL_BO_KIND] == KL_OP_DWCONV;
			const uint32_t ws = kl_rd32(o + KL_BO_W_SIZE);
			uint64_t need = dense && s8 ? KL_FC_S8_SCRATCH(nx, ny) : 0u;
			if (compact) { /* int16 sums and a band: conv, depthwise, the gradient
					* of in0 made by the grad step right before, here */
				const uint8_t *pv = sp - KL_STEP_SIZE; /* k > 0: a grad step */
				if (!in_place || !conv || k == 0u || pv[KL_SS_FLAGS] != 0u ||
				    pv[KL_SS_KIND] != KL_STEP_GRAD ||
				    kl_rd16(pv + KL_SS_INDEX) != in0 ||
				    kl_rd32(pv + KL_SS_OFFSET) != off) {
					return KL_ECORRUPT;
				}
				need = kl_compact_scratch(kl_rd16(tx + KL_BT_H), kl_rd16(tx + KL_BT_W),
							  kl_rd16(tx + KL_BT_C), o[KL_BO_STRIDE]);
			} else if (bit(st.need_grad, in0) || (add && bit(st.need_grad, in1))) {
				need = nx * 4u > need ? nx * 4u : need; /* input-gradient sums */
			}
			uint64_t upd = 0;
			if ((o[KL_BO_FLAGS] & KL_OP_TRAINABLE) != 0u && ws != 0u) {
				const uint64_t n_b = dense ? ny : co;
				if ((o[KL_BO_FLAGS] & KL_OP_BIAS_ONLY) != 0u) {
					upd = n_b * 4u;
				} else if (conv) {
					upd = ((uint64_t)(s8 ? ws : ws >> 2) + n_b) * 4u;
				} else if (dense && s8) {
					upd = KL_FC_SGD_S8_SCRATCH(nx, ny);
				}
			}
			upd += in_place ? (nx * es + 7u) & ~(uint64_t)7u : 0u;
			need = upd > need ? upd : need;
			if (idx >= frontier || !bit(st.grad, out) || (off % 8u) != 0u ||
			    !in_region(off, need, region, split) ||
			    !bwd_reads_live(&st, o, input, s8) ||
			    (bit(st.need_grad, in0) && !bit(st.grad, in0)) ||
			    (bit(st.need_grad, in1) && !bit(st.grad, in1))) {
				return KL_ECORRUPT;
			}
			frontier = idx;
			continue;
		}
		if (idx >= n_t || idx == input) {
			return KL_ECORRUPT;
		}
		const uint64_t size = tensor_size(t_tab + idx * KL_BLOB_TENSOR_SIZE) * es;
		const int placed = kind == KL_STEP_LOSS || kind == KL_STEP_GRAD;
		if (placed && ((off % 4u) != 0u || !in_region(off, size, region, split))) {
			return KL_ECORRUPT;
		}
		switch (kind) {
		case KL_STEP_LOSS:
			if (idx != output || n_loss++ != 0u || !bit(st.data, idx) ||
			    bit(st.grad, idx)) {
				return KL_ECORRUPT;
			}
			set_bit(st.grad, idx, 1);
			break;
		case KL_STEP_GRAD:
			if (!bit(st.need_grad, idx) || bit(st.grad, idx) || n_loss == 0u) {
				return KL_ECORRUPT;
			}
			set_bit(st.grad, idx, 1);
			break;
		case KL_STEP_FREE_DATA:
		case KL_STEP_FREE_GRAD: {
			uint8_t *live = kind == KL_STEP_FREE_DATA ? st.data : st.grad;
			if (!bit(live, idx) || (kind == KL_STEP_FREE_DATA && idx == output)) {
				return KL_ECORRUPT;
			}
			set_bit(live, idx, 0);
			break;
		}
		default:
			return KL_ECORRUPT;
		}
	}
	return n_loss == 1u && bit(st.data, output) ? KL_OK : KL_ECORRUPT;
}

int kl_blob_check(const uint8_t *blob, size_t len)
{
	if (blob == NULL) {
		return KL_EINVAL;
	}
	if (len < 8u || kl_rd32(blob + KL_BH_MAGIC) != KL_BLOB_MAGIC) {
		return len < 4u ? KL_ETRUNC : KL_EBADMAGIC;
	}
	if (kl_rd16(blob + KL_BH_VER_MAJOR) != KL_BLOB_VERSION_MAJOR) {
		return KL_EVERSION;
	}
	if (len < KL_BLOB_HEADER_SIZE) {
		return KL_ETRUNC;
	}
	const uint32_t total = kl_rd32(blob + KL_BH_TOTAL_SIZE);
	if (total < KL_BLOB_HEADER_SIZE) {
		return KL_ECORRUPT;
	}
	if (total > len) {
		return KL_ETRUNC;
	}
	if (kl_crc32(0, blob + KL_BLOB_CRC_START, total - KL_BLOB_CRC_START) !=
	    kl_rd32(blob + KL_BH_CRC)) {
		return KL_ECRC;
	}
	const uint8_t dtype = blob[KL_BH_DTYPE];
	const uint32_t n_t = kl_rd16(blob + KL_BH_N_TENSORS);
	const uint32_t n_ops = kl_rd16(blob + KL_BH_N_OPS);
	const uint32_t t_off = kl_rd32(blob + KL_BH_TENSORS);
	const uint32_t o_off = kl_rd32(blob + KL_BH_OPS);
	const uint32_t input = kl_rd16(blob + KL_BH_INPUT);
	const uint32_t output = kl_rd16(blob + KL_BH_OUTPUT);
	if (dtype > KL_DTYPE_S8 || n_t < 2u || n_t > KL_MAX_TENSORS || n_ops == 0u ||
	    n_ops > KL_MAX_OPS || input >= n_t || output >= n_t ||
	    !range_ok(t_off, (uint64_t)n_t * KL_BLOB_TENSOR_SIZE, KL_BLOB_HEADER_SIZE, total) ||
	    !range_ok(o_off, (uint64_t)n_ops * KL_BLOB_OP_SIZE, t_off + n_t * KL_BLOB_TENSOR_SIZE,
		      total)) {
		return KL_ECORRUPT;
	}
	const int s8 = dtype == KL_DTYPE_S8;
	const uint32_t data_lo = o_off + n_ops * KL_BLOB_OP_SIZE;
	if (s8 && (!exp_ok((int8_t)blob[KL_BH_LUT_EXP]) ||
		   !range_ok(kl_rd32(blob + KL_BH_LUT), 2u * KL_BLOB_LUT_ENTRIES, data_lo, total) ||
		   !lut_ok(blob + kl_rd32(blob + KL_BH_LUT)))) {
		return KL_ECORRUPT;
	}
	for (uint32_t k = 0; k < n_t; k++) {
		const uint8_t *t = blob + t_off + k * KL_BLOB_TENSOR_SIZE;
		const uint64_t n = tensor_size(t);
		if (n == 0u || n > (1u << 24) || (s8 && !exp_ok((int8_t)t[KL_BT_EXP]))) {
			return KL_ECORRUPT;
		}
	}
	uint8_t produced[KL_MAX_TENSORS / 8u] = {0};
	produced[input >> 3] = (uint8_t)(1u << (input & 7u));
	for (uint32_t i = 0; i < n_ops; i++) {
		const int err = check_op(blob, blob + o_off + i * KL_BLOB_OP_SIZE, n_t, t_off,
					 data_lo, total, s8, produced);
		if (err != KL_OK) {
			return err;
		}
	}
	const uint8_t *last = blob + o_off + (n_ops - 1u) * KL_BLOB_OP_SIZE;
	const uint64_t n_cls = tensor_size(blob + t_off + output * KL_BLOB_TENSOR_SIZE);
	const uint32_t minor = kl_rd16(blob + KL_BH_VER_MINOR);
	const uint32_t loss = minor >= 5u ? blob[KL_BH_LOSS] : KL_LOSS_SOFTMAX_CE;
	if (loss >= KL_LOSS_COUNT || (minor < 5u && blob[KL_BH_LOSS] != 0u) ||
	    kl_rd16(last + KL_BO_OUT) != output || last[KL_BO_ACT] != KL_ACT_NONE ||
	    n_cls < (loss == KL_LOSS_SOFTMAX_CE ? 2u : 1u) ||
	    n_cls > 0xFFFFu || tensor_size(blob + t_off + input * KL_BLOB_TENSOR_SIZE) > 0xFFFFu) {
		return KL_ECORRUPT;
	}
	if (kl_rd16(blob + KL_BH_VER_MINOR) >= 2u) { /* 2.2: the update policy */
		const uint32_t pol = blob[KL_BH_UPD_POLICY];
		const uint32_t frac = kl_rd16(blob + KL_BH_UPD_FRAC);
		if (pol >= KL_UPDATE_POLICY_COUNT || blob[KL_BH_UPD_RSVD] != 0u ||
		    frac > KL_UPDATE_FRAC_ONE || (pol != KL_UPDATE_ALL && frac == 0u) ||
		    (pol == KL_UPDATE_ALL && frac != 0u)) {
			return KL_ECORRUPT;
		}
	}
	const uint32_t sched = kl_blob_schedule(blob);
	return sched == 0u ? KL_OK : check_schedule(blob, sched, data_lo, total, s8);
}

int kl_blob_loss(const uint8_t *blob)
{
	return kl_rd16(blob + KL_BH_VER_MINOR) >= 5u ? blob[KL_BH_LOSS] : KL_LOSS_SOFTMAX_CE;
}

int kl_blob_update_policy(const uint8_t *blob, uint32_t *permille)
{
	if (kl_rd16(blob + KL_BH_VER_MINOR) < 2u) {
		*permille = 0;
		return KL_UPDATE_ALL;
	}
	*permille = kl_rd16(blob + KL_BH_UPD_FRAC);
	return blob[KL_BH_UPD_POLICY];
}

const char *kl_strerror(int err)
{
	switch (err) {
	case KL_OK:
		return "ok";
	case KL_ENOMEM:
		return "arena too small";
	case KL_EINVAL:
		return "invalid argument";
	case KL_ENOTSUP:
		return "not supported";
	case KL_EBADMAGIC:
		return "not a kilolearn blob (bad magic)";
	case KL_EVERSION:
		return "unsupported blob format version";
	case KL_ETRUNC:
		return "blob truncated";
	case KL_ECRC:
		return "blob CRC mismatch";
	case KL_ECORRUPT:
		return "blob contents inconsistent";
	case KL_EBUSY:
		return "busy: the weight store is being written";
	case -5: /* KL_EIO (kl_store.h) */
		return "flash failed (or lost power)";
	case -28: /* KL_ENOSPC (kl_store.h) */
		return "no room in the weight store";
	default:
		return "unknown error";
	}
}

uint32_t kl_blob_schedule(const uint8_t *blob)
{
	return kl_rd16(blob + KL_BH_VER_MINOR) >= 1u ? kl_rd32(blob + KL_BH_SCHED) : 0u;
}
