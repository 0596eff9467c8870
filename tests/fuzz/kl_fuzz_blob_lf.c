/*
 * libFuzzer target: a model blob (docs/blob-format.md) through kl_blob_check,
 * kl_model_init (training and inference), kl_train_step / kl_compute_grads +
 * kl_apply_grads / kl_train_step_from, and kl_predict.
 *
 * Input: the blob; the bytes after its total size (a longer buffer is
 * allowed) are the options and the samples:
 *   opt bit 0  keep the CRC as it is (else the harness reseals it, so that
 *              the structural checks behind it are reached)
 *       bit 1  momentum 0.9 (KL_ENOTSUP for int8)
 *       bit 2  kl_compute_grads + kl_apply_grads instead of the fused step
 *       bit 3  an update policy: byte = policy, byte = per mille
 *       bit 4  a replay step from a cut tensor (byte) when the model allows it
 *       bit 5  float samples as raw bits (NaN, Inf, ...), else small values
 *       bit 6  a small arena (byte * 256 bytes)
 *   then the bytes the samples and labels are made from.
 * Without trailing bytes: resealed, defaults, a fixed pattern.
 *
 * Checked (besides ASan/UBSan): init fails exactly when kl_blob_check does
 * (or with KL_ENOMEM/KL_ENOTSUP/KL_EINVAL for arena and settings); every code
 * is a known one; an accepted model trains and predicts classes in range, and
 * before any training step the training layout (without a schedule) predicts
 * the same logits as the inference layout.
 */
#include "kl_fuzz_lf.h"
#include "kl_fuzz_paged.h"

#define BLOB_MAX (256u * 1024u)
#define SAMPLE_MAX (256u * 1024u) /* 65535 float inputs */

static uint32_t blob_mem[BLOB_MAX / 4u];
static uint32_t arena2_mem[FZ_ARENA_MAX / 4u];
static uint32_t sample_mem[SAMPLE_MAX / 4u];
static uint8_t logits0[4u * 1024u];

static int known_code(int err)
{
	switch (err) {
	case KL_ENOMEM:
	case KL_EINVAL:
	case KL_ENOTSUP:
	case KL_EBADMAGIC:
	case KL_EVERSION:
	case KL_ETRUNC:
	case KL_ECRC:
	case KL_ECORRUPT:
		return 1;
	default:
		return 0;
	}
}

/* sample k of the model's input size from the trailing bytes (or a pattern) */
static const void *sample(const kl_model_t *m, const uint8_t *src, size_t n_src, int raw, int k)
{
	(void)fz_fill((uint8_t *)sample_mem, m->n_inputs, m->dtype, src, n_src, raw, (size_t)k * 7u);
	return sample_mem;
}

static size_t logits_bytes(const kl_model_t *m)
{
	return (size_t)m->n_classes * (m->dtype == KL_DTYPE_F32 ? 4u : 1u);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > BLOB_MAX) {
		return 0;
	}
	uint8_t *b = (uint8_t *)blob_mem;
	memcpy(b, data, size);
	uint32_t total = size >= KL_BLOB_HEADER_SIZE ? fz_rd32(b + KL_BH_TOTAL_SIZE) : 0u;
	fz_in_t tail = {data, size, size};
	if (total >= KL_BLOB_CRC_START && total < size) {
		tail.i = total;
	} else {
		total = (uint32_t)size;
	}
	const uint8_t opt = fz_u8(&tail);
	if (!(opt & 1u) && total >= KL_BLOB_CRC_START && total <= size) {
		fz_wr32(b + KL_BH_CRC, kl_crc32(0, b + KL_BLOB_CRC_START, total - KL_BLOB_CRC_START));
	}
	const uint8_t pol = (opt & 8u) ? fz_u8(&tail) : 0u, pm = (opt & 8u) ? fz_u8(&tail) : 0u;
	const uint8_t cut = (opt & 16u) ? fz_u8(&tail) : 0u;
	const size_t arena_size = (opt & 64u) ? 256u * (size_t)fz_u8(&tail) : FZ_ARENA_MAX;
	size_t n_src;
	const uint8_t *src = fz_take(&tail, fz_left(&tail), &n_src);
	const int raw = (opt & 32u) != 0u;

	const int chk = kl_blob_check(b, size);
	FZ_CHECK(chk == KL_OK || known_code(chk), "kl_blob_check returned %d", chk);

	/* inference layout */
	kl_arena_t a_inf;
	kl_arena_init(&a_inf, arena2_mem, arena_size);
	kl_model_t inf;
	const int e_inf = kl_model_init(&inf, b, size, &a_inf, NULL);
	FZ_CHECK(known_code(e_inf) || e_inf == KL_OK, "inference init returned %d", e_inf);
	FZ_CHECK(chk == KL_OK || e_inf == chk, "kl_blob_check %d but inference init %d", chk, e_inf);
	FZ_CHECK(chk != KL_OK || e_inf == KL_OK || e_inf == KL_ENOMEM || e_inf == KL_ENOTSUP,
		 "kl_blob_check accepted a blob inference init refuses with %d", e_inf);
	int pred_inf = -1;
	if (e_inf == KL_OK) {
		pred_inf = kl_predict(&inf, sample(&inf, src, n_src, raw, 0));
		FZ_CHECK(pred_inf >= 0 && pred_inf < inf.n_classes, "inference predict %d of %u classes",
			 pred_inf, inf.n_classes);
		FZ_CHECK(logits_bytes(&inf) <= sizeof(logits0), "%u classes", inf.n_classes);
		memcpy(logits0, kl_logits(&inf), logits_bytes(&inf));
	}

	/* training layout */
	kl_arena_t a;
	kl_arena_init(&a, fz_arena_mem, arena_size);
	kl_model_t m;
	const kl_train_cfg_t cfg = {.lr = 0.05f, .momentum = (opt & 2u) ? 0.9f : 0.0f, .seed = 7u,
				    .flags = (opt & 4u) ? KL_CFG_KEEP_GRADS : 0u};
	const int err = kl_model_init(&m, b, size, &a, &cfg);
	FZ_CHECK(known_code(err) || err == KL_OK, "training init returned %d", err);
	FZ_CHECK(chk == KL_OK || err == chk, "kl_blob_check %d but training init %d", chk, err);
	FZ_CHECK(chk != KL_OK || err == KL_OK || err == KL_ENOMEM || err == KL_ENOTSUP,
		 "kl_blob_check accepted a blob training init refuses with %d", err);
	if (err != KL_OK) {
		return 0;
	}
	if (m.paged) { /* its rows go to a weight log: a RAM one */
		const int e = fz_attach_paged(&m, b, &a, fz_arena_mem, arena_size, &cfg);
		FZ_CHECK(e == KL_OK || e == KL_ENOMEM, "a paged model's weight log: %d", e);
		if (e != KL_OK) {
			return 0;
		}
	}
	if (e_inf == KL_OK && m.sched == NULL) {
		/* the same logits from both layouts before any update (a schedule may overlap
		 * buffers the planner thought dead: other results, by design, not a memory error) */
		const int p = kl_predict(&m, sample(&m, src, n_src, raw, 0));
		FZ_CHECK(p == pred_inf && memcmp(kl_logits(&m), logits0, logits_bytes(&m)) == 0,
			 "training layout predicts %d, inference layout %d (or other logits)", p,
			 pred_inf);
	}
	if (opt & 8u) {
		const int e = kl_model_set_update_policy(&m, pol % 5u, pm * 4u + 1u);
		FZ_CHECK(e == KL_OK || e == KL_EINVAL || e == KL_ENOTSUP || e == KL_ENOMEM,
			 "set_update_policy returned %d", e);
	}
	for (int k = 0; k < 3; k++) {
		const int label = n_src ? src[(size_t)k % n_src] % m.n_classes : k % m.n_classes;
		const void *x = sample(&m, src, n_src, raw, k + 1);
		int r;
		if (opt & 4u) {
			r = kl_compute_grads(&m, x, label);
			if (r >= 0) {
				const int e = kl_apply_grads(&m);
				FZ_CHECK(e == KL_OK, "kl_apply_grads returned %d", e);
			}
		} else {
			r = kl_train_step(&m, x, label);
		}
		FZ_CHECK(r >= 0 && r < m.n_classes, "training step returned %d (%u classes)", r,
			 m.n_classes);
	}
	if ((opt & 16u) && m.sched == NULL && !(opt & 4u)) {
		const int t = cut % m.n_tensors;
		if (kl_model_check_cut(&m, t) == KL_OK && !m.tensors[t].need_grad) {
			const kl_tensor_t *ct = &m.tensors[t];
			const size_t nb = (size_t)ct->h * ct->w * ct->c * (m.dtype == KL_DTYPE_F32 ? 4u : 1u);
			if (nb <= SAMPLE_MAX) {
				/* a latent: the tensor's current activations (the input: a sample) */
				const void *lat = sample(&m, src, n_src, raw, 9);
				if (t != m.input) {
					memcpy(sample_mem, ct->data, nb);
				}
				const int r = kl_train_step_from(&m, t, lat, 0);
				FZ_CHECK(r >= 0 && r < m.n_classes, "train_step_from %d returned %d", t, r);
			}
		}
	}
	const int p = kl_predict(&m, sample(&m, src, n_src, raw, 5));
	FZ_CHECK(p >= 0 && p < m.n_classes, "predict after training %d (%u classes)", p, m.n_classes);
	return 0;
}
