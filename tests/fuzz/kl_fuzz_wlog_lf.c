/*
 * libFuzzer target: the weight log of paged models on crafted flash
 * (docs/paged-weights.md). A small int8 model (the session seed blob with its
 * dense ops made paged) is stored as a generation; its log region is built
 * from the input: records written by the engine's own writer with any op,
 * row, length, payload and transaction number, then broken (magic, CRCs,
 * generation, a byte of the payload) or not, commit records, raw bytes,
 * erased sectors. Then the model is attached (the mount), trained and
 * mounted again.
 *
 * Input: byte 0 geometry (GEOMS), then records, op % 6:
 *   0 ROW     op u8, row u16, len u8 (0: the right payload size), txn u8, break u8,
 *             then payload bytes from the input
 *   1 COMMIT  txn u8, len u8 (0: the right state size), break u8, payload bytes
 *   2 BYTES   offset u16, n u8, n bytes
 *   3 ERASE   sector u8
 *   4 SKIP    the writer moves on to the next sector
 *   5 RESET   a reset record (what came before it is void)
 *
 * Checked (besides ASan/UBSan):
 *   - every row the mount applied lies inside the log region, 4-aligned;
 *   - a training step on the mounted model succeeds (or reports a flash
 *     error code), and a mount right after it sees exactly the weights the
 *     model has (kl_model_blob_read before and after, byte for byte): what a
 *     step commits is what the next boot finds, whatever the log held.
 */
#include "kl_fuzz_lf.h"
#include "kl_fuzz_blobs.h"
#include "kilolearn/kl_wlog.h"

static const kl_store_geom_t GEOMS[4] = {
	{16u * 1024u, 4096u, 16u, 0xFFu},
	{8u * 1024u, 1024u, 4u, 0x00u},
	{16u * 1024u, 2048u, 64u, 0xFFu},
	{12u * 1024u, 4096u, 256u, 0x00u},
};
#define SLOT_SIZE (16u * 1024u)
#define LOG_MAX   (16u * 1024u)

static uint64_t slot_mem[SLOT_SIZE / 8u], log_mem[LOG_MAX / 8u];
static uint64_t arena_mem[32u * 1024u / 8u];
static uint8_t blob[FZ_BLOB_MAX];
static uint32_t blob_len;
static uint8_t before[FZ_BLOB_MAX], after[FZ_BLOB_MAX];

/* the int8 session blob with every trainable dense op paged, CRC resealed */
static void make_blob(void)
{
	const fz_blob_t *b = &FZ_BLOBS[0];
	memcpy(blob, b->data, b->len);
	blob_len = b->len;
	const uint32_t ops = kl_rd32(blob + KL_BH_OPS), n_ops = kl_rd16(blob + KL_BH_N_OPS);
	for (uint32_t i = 0; i < n_ops; i++) {
		uint8_t *o = blob + ops + i * KL_BLOB_OP_SIZE;
		if (o[KL_BO_KIND] == KL_OP_DENSE && o[KL_BO_FLAGS] == KL_OP_TRAINABLE) {
			o[KL_BO_FLAGS] = KL_OP_TRAINABLE | KL_OP_PAGED;
		}
	}
	kl_wr16(blob + KL_BH_VER_MINOR, 4u);
	kl_wr32(blob + KL_BH_CRC, kl_crc32(0, blob + KL_BLOB_CRC_START, blob_len - KL_BLOB_CRC_START));
}

typedef struct {
	kl_store_t slot_st, log_st;
	kl_nor_sim_t slot_sim, log_sim;
	kl_slots_t slots;
	kl_wlog_t lg;
	kl_arena_t arena;
	kl_model_t m;
} rig_t;

static rig_t R;

static int boot(void)
{
	if (kl_slots_mount_checked(&R.slots, &R.slot_st, kl_blob_check) != KL_OK) {
		return -1;
	}
	uint32_t len = 0;
	const uint8_t *b = kl_slots_active(&R.slots, &len);
	FZ_CHECK(b != NULL, "the stored blob is gone");
	kl_slots_pin(&R.slots, 1);
	kl_arena_init(&R.arena, arena_mem, sizeof(arena_mem));
	const kl_train_cfg_t cfg = {.lr = 0.1f, .seed = 7u};
	FZ_CHECK(kl_model_init(&R.m, b, len, &R.arena, &cfg) == KL_OK, "the paged blob");
	FZ_CHECK(kl_wlog_open_active(&R.lg, &R.log_st, &R.slots) == KL_OK, "open");
	FZ_CHECK(kl_model_attach_wlog(&R.m, &R.lg) == KL_OK, "attach");
	const uint8_t *lo = R.log_st.base, *hi = lo + R.log_st.geom.size;
	for (int i = 0; i < R.m.n_ops; i++) {
		const kl_op_t *op = &R.m.ops[i];
		if (op->rows == NULL) {
			continue;
		}
		const uint32_t n = R.m.tensors[op->out].h * R.m.tensors[op->out].w * R.m.tensors[op->out].c;
		for (uint32_t r = 0; r < n; r++) {
			FZ_CHECK(op->rows[r] == NULL || (op->rows[r] >= lo && op->rows[r] < hi &&
							 ((uintptr_t)op->rows[r] & 3u) == 0u),
				 "row %u of op %d outside the log", (unsigned)r, i);
		}
	}
	return 0;
}

/* a record through the engine's writer, then broken as asked */
static void put_record(fz_in_t *in, int commit)
{
	const uint16_t op = commit ? KL_WLOG_COMMIT : fz_u8(in);
	const uint16_t row = commit ? 0u : fz_u16(in);
	uint32_t len = commit ? 0u : fz_u8(in);
	const uint8_t txn = fz_u8(in);
	if (commit) {
		len = fz_u8(in);
	}
	const uint8_t brk = fz_u8(in);
	if (len == 0u) { /* the size the model expects */
		if (commit) {
			len = 4u + R.m.n_tensors;
		} else if (op < R.m.n_ops) {
			const kl_op_t *o = &R.m.ops[op];
			len = (R.m.tensors[o->in0].h * R.m.tensors[o->in0].w * R.m.tensors[o->in0].c + 3u) / 4u * 4u + 4u;
		}
	}
	R.lg.txn = txn;
	const uint32_t at = R.lg.pos;
	if (kl_wlog_begin(&R.lg, op, row, len) != KL_OK) {
		return;
	}
	uint8_t buf[64];
	for (uint32_t k = 0; k < len;) {
		size_t got = 0;
		const uint8_t *p = fz_take(in, len - k < sizeof(buf) ? len - k : sizeof(buf), &got);
		uint32_t n = (uint32_t)(got != 0u ? got : (len - k < sizeof(buf) ? len - k : sizeof(buf)));
		if (got != 0u) {
			memcpy(buf, p, n);
		} else {
			memset(buf, 0, n);
		}
		if (kl_wlog_append(&R.lg, buf, n) != KL_OK) {
			return;
		}
		k += n;
	}
	if (kl_wlog_end(&R.lg, NULL) != KL_OK) {
		return;
	}
	uint8_t *h = (uint8_t *)(uintptr_t)R.log_st.base + at;
	if (brk & 1u) {
		h[0] ^= 0x01u; /* magic */
	}
	if (brk & 2u) {
		h[36] ^= 0x80u; /* header CRC */
	}
	if (brk & 4u) {
		h[24] ^= 0x01u; /* generation */
	}
	if ((brk & 8u) && len != 0u) {
		h[R.lg.hdr_span + (brk >> 4) % len] ^= 0x40u; /* the payload */
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int once;
	if (!once) {
		make_blob();
		FZ_CHECK(kl_blob_check(blob, blob_len) == KL_OK, "the paged seed blob");
		once = 1;
	}
	fz_in_t in = {data, size, 0};
	const kl_store_geom_t *g = &GEOMS[fz_u8(&in) % 4u];
	const kl_store_geom_t sg = {SLOT_SIZE, 4096u, 16u, 0xFFu};
	memset(&R, 0, sizeof(R));
	FZ_CHECK(kl_store_nor_init(&R.slot_st, &R.slot_sim, (uint8_t *)slot_mem, &sg) == KL_OK, "");
	FZ_CHECK(kl_store_nor_init(&R.log_st, &R.log_sim, (uint8_t *)log_mem, g) == KL_OK, "");
	kl_store_nor_format(&R.slot_st);
	kl_store_nor_format(&R.log_st);
	FZ_CHECK(kl_slots_mount(&R.slots, &R.slot_st) == KL_OK &&
			 kl_slots_begin(&R.slots, blob_len) == KL_OK &&
			 kl_slots_write(&R.slots, blob, blob_len) == KL_OK &&
			 kl_slots_end(&R.slots, kl_crc32(0, blob, blob_len)) == KL_OK,
		 "store the blob");
	FZ_CHECK(boot() == 0, "first boot");
	/* the log, crafted */
	for (int n = 0; n < 64 && fz_left(&in) > 0u; n++) {
		switch (fz_u8(&in) % 6u) {
		case 0:
			put_record(&in, 0);
			break;
		case 1:
			put_record(&in, 1);
			break;
		case 2: {
			const uint32_t off = fz_u16(&in) % g->size;
			size_t got = 0;
			const uint8_t *p = fz_take(&in, fz_u8(&in), &got);
			const uint32_t k = (uint32_t)(got < g->size - off ? got : g->size - off);
			memcpy((uint8_t *)log_mem + off, p, k);
			break;
		}
		case 3:
			(void)kl_store_erase(&R.log_st, (fz_u8(&in) % (g->size / g->erase_block)) *
							   g->erase_block, g->erase_block);
			break;
		case 5:
			R.lg.txn_records = 0;
			R.lg.txn = fz_u8(&in);
			(void)kl_wlog_reset(&R.lg);
			break;
		default:
			R.lg.pos = (R.lg.pos / g->erase_block + 1u) * g->erase_block;
			R.lg.erased_to = R.lg.pos > R.lg.erased_to ? R.lg.pos : R.lg.erased_to;
			break;
		}
	}
	/* boot on it, train a step, boot again: the same weights */
	FZ_CHECK(boot() == 0, "boot on the crafted log");
	int8_t x[256];
	memset(x, 0, sizeof(x));
	for (uint32_t k = 0; k < R.m.n_inputs && k < sizeof(x); k++) {
		x[k] = (int8_t)(k * 37u);
	}
	const int r = kl_train_step(&R.m, x, 1);
	FZ_CHECK(r >= 0 || r == KL_ENOSPC || r == -5, "train step: %d", r);
	if (r >= 0) {
		FZ_CHECK(kl_model_blob_read(&R.m, 0, before, R.m.blob_len) == KL_OK, "read");
		const uint32_t len = R.m.blob_len;
		FZ_CHECK(boot() == 0, "boot after the step");
		FZ_CHECK(R.m.blob_len == len && kl_model_blob_read(&R.m, 0, after, len) == KL_OK &&
				 memcmp(before + KL_BLOB_CRC_START, after + KL_BLOB_CRC_START,
					len - KL_BLOB_CRC_START) == 0,
			 "the committed step did not come back");
		FZ_CHECK(kl_predict(&R.m, x) >= 0, "predict");
	}
	return 0;
}
