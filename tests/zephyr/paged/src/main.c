/*
 * Paged weights under Zephyr (docs/paged-weights.md, docs/zephyr.md): an int8 784-512-128-10
 * MLP (468,874 parameters) whose weights stay in the kilolearn_weights partition of the
 * flash simulator (flash_area, read in place) trains in a 20 KB arena, channel-norm updates
 * of 18.5 % of the rows written back through the weight log, folds into new generations
 * when the log is full. Checked against the same blob without the paged flag trained in
 * memory (same policy, seed and samples: every prediction and, at the end, every weight and
 * bias bit for bit), then a "reboot": the partition mounted again, the model from its active
 * generation and the log, the same weights (CRC), and training goes on, still equal to the
 * twin. Prints one line of figures, "KL paged key=value ...".
 */
#include <string.h>

#include <zephyr/device.h>
#include <zephyr/drivers/flash.h>
#include <zephyr/drivers/flash/flash_simulator.h>
#include <zephyr/kernel.h>
#include <zephyr/storage/flash_map.h>
#include <zephyr/sys/byteorder.h>
#include <zephyr/sys/printk.h>
#include <zephyr/ztest.h>

#include <kilolearn/kilolearn.h>
#include "zephyr/kl_store_flash_area.h"
#include <kilolearn/kl_store.h>
#include <kilolearn/kl_wlog.h>

#include "mlp_blob.h"

#define STEPS      200u /* training steps before the reboot */
#define MORE_STEPS 30u  /* and after it */
#define PERMILLE   185u /* Kwon & Park's 18.52 % of the weights, as rows */
#define SEED       0x2545F491u
#define LR         0.05f
#define ARENA      20480u
#define TWIN_ARENA (512u * 1024u + 32u * 1024u)
#define N_TEST     50u /* held-out samples for the accuracy (after the training ones) */

BUILD_ASSERT(MLP_PARAMS >= 400000u, "the scenario's network has >= 400k parameters");

static uint8_t arena_mem[ARENA] __aligned(8);
static uint8_t twin_arena_mem[TWIN_ARENA] __aligned(8);
static uint8_t twin_blob[MLP_BLOB_BYTES] __aligned(8);
static kl_arena_t arena, twin_arena;
static kl_model_t pm, twin; /* paged, in memory */

static kl_store_t part, slot_st, log_st;
static kl_slots_t slots;
static kl_wlog_t wlog;
static uint32_t slot_bytes;
#define MAX_SECTORS 4096u
static uint32_t wear[2u * MAX_SECTORS];

static int8_t sample[MLP_N_IN] __aligned(4);
static uint8_t rd[4u * 512u] __aligned(4); /* a row, or a layer's biases */

static struct {
	int trained;  /* the first test went through */
	uint32_t steps, folds, bytes, erases, max_wear, acc0, acc1, peak, twin_peak;
	uint32_t crc, remount_crc, mounted, exp_moved;
} fig;

/* ---- the partition as a kl_store_t (flash_area, the simulator's memory mapped) -------- */

/* Open kilolearn_weights as it is after a boot: geometry from the driver. */
static void part_open(void)
{
	const struct flash_area *fa;

	zassert_ok(flash_area_open(FIXED_PARTITION_ID(kilolearn_weights), &fa));
	const struct device *dev = flash_area_get_device(fa);

	zassert_true(dev != NULL && device_is_ready(dev));
	const struct flash_parameters *fp = flash_get_parameters(dev);
	struct flash_pages_info page;

	zassert_ok(flash_get_page_info_by_offs(dev, fa->fa_off, &page));
	size_t sim_size = 0;
	uint8_t *mem = flash_simulator_get_memory(dev, &sim_size);

	zassert_not_null(mem);
	zassert_true(fa->fa_off + fa->fa_size <= sim_size);
	const uint32_t eb = (uint32_t)page.size;

	const kl_store_geom_t g = {(uint32_t)fa->fa_size / eb * eb, eb,
				   (uint32_t)fp->write_block_size, fp->erase_value};

	kl_store_flash_area_init(&part, fa, &g, mem + fa->fa_off);
	zassert_true(kl_store_sectors(&part) <= MAX_SECTORS);
	/* two generations (the fold writes the next one beside the pinned one), the log after */
	slot_bytes = 2u * ((KL_SLOT_HDR + MLP_BLOB_BYTES + eb - 1u) / eb + 2u) * eb;
	zassert_true(slot_bytes + 2u * eb <= part.size, "partition too small: %u",
		     (unsigned int)part.size);
	zassert_ok(kl_store_sub_init(&slot_st, &part, 0, slot_bytes));
	zassert_ok(kl_store_sub_init(&log_st, &part, slot_bytes, part.size - slot_bytes));
}

/* mount the generations, the model from the active one (read in place), the log */
static void paged_mount(uint32_t seed)
{
	uint32_t len = 0;

	zassert_ok(kl_slots_mount_checked(&slots, &slot_st, kl_blob_check));
	const uint8_t *blob = kl_slots_active(&slots, &len);

	zassert_not_null(blob, "no valid generation");
	kl_slots_pin(&slots, 1);
	const kl_train_cfg_t cfg = {.lr = LR, .seed = seed};

	kl_arena_init(&arena, arena_mem, sizeof(arena_mem));
	zassert_ok(kl_model_init(&pm, blob, len, &arena, &cfg));
	zassert_ok(kl_wlog_open_active(&wlog, &log_st, &slots));
	zassert_ok(kl_model_attach_wlog(&pm, &wlog));
}

/* CRC-32 of the paged model's blob as it has it now (the logged rows over it) over the
 * bytes a blob's CRC covers: after a fold, its new generation's header CRC */
static uint32_t model_crc(const kl_model_t *m)
{
	uint32_t crc = 0;

	for (uint32_t off = KL_BLOB_CRC_START; off < m->blob_len; off += sizeof(rd)) {
		const uint32_t n = MIN(m->blob_len - off, (uint32_t)sizeof(rd));

		zassert_ok(kl_model_blob_read(m, off, rd, n));
		crc = kl_crc32(crc, rd, n);
	}
	return crc;
}

/* every weight and bias of the paged model equal to the twin's; rows that moved */
static uint32_t compare_with_twin(void)
{
	uint32_t moved = 0;

	for (uint32_t i = 0; i < MLP_N_OPS; i++) {
		const uint32_t n_in = mlp_n_in(i), n_out = mlp_n_out(i);
		const kl_op_t *op = &twin.ops[i];

		for (uint32_t r = 0; r < n_out; r++) {
			const int8_t *tw = (const int8_t *)op->w + (size_t)r * n_in;

			zassert_ok(kl_model_blob_read(&pm, mlp_w_off(i) + r * n_in, rd, n_in));
			zassert_mem_equal(rd, tw, n_in, "op %u row %u: weights differ", i, r);
			moved += memcmp(tw, twin_blob + mlp_w_off(i) + r * n_in, n_in) != 0;
		}
		zassert_true(4u * n_out <= sizeof(rd));
		zassert_ok(kl_model_blob_read(&pm, mlp_b_off(i), rd, 4u * n_out));
		zassert_mem_equal(rd, op->b, 4u * n_out, "op %u: biases differ", i);
	}
	return moved;
}

/* one step of both models on training sample i: the same prediction */
static void train_both(uint32_t i)
{
	int label;

	mlp_sample(i, sample, &label);
	const int p = kl_train_step(&pm, sample, label);
	const int t = kl_train_step(&twin, sample, label);

	zassert_true(p >= 0, "paged step %u: %d (%s)", i, p, kl_strerror(p));
	zassert_true(t >= 0, "twin step %u: %d", i, t);
	zassert_equal(p, t, "step %u: paged predicts %d, in memory %d", i, p, t);
}

static uint32_t accuracy(kl_model_t *m)
{
	uint32_t ok = 0;
	int label;

	for (uint32_t i = 0; i < N_TEST; i++) {
		mlp_sample(100000u + i, sample, &label);
		ok += kl_predict(m, sample) == label;
	}
	return ok;
}

static void *setup(void)
{
	part_open();
	/* a fresh partition: every sector erased, the blob as the first generation */
	zassert_ok(kl_store_erase(&part, 0, part.size));
	zassert_equal(mlp_blob_size(), MLP_BLOB_BYTES);
	mlp_blob_write(twin_blob, 1, SEED, PERMILLE);
	zassert_ok(kl_blob_check(twin_blob, MLP_BLOB_BYTES), "the paged blob is not valid");
	zassert_ok(kl_slots_mount_checked(&slots, &slot_st, kl_blob_check));
	zassert_ok(kl_slots_begin(&slots, MLP_BLOB_BYTES));
	zassert_ok(kl_slots_write(&slots, twin_blob, MLP_BLOB_BYTES));
	zassert_ok(kl_slots_end(&slots, kl_crc32(0, twin_blob, MLP_BLOB_BYTES)));
	/* the twin: the same blob without the paged flag, weights copied into its arena */
	mlp_blob_write(twin_blob, 0, SEED, PERMILLE);
	zassert_ok(kl_blob_check(twin_blob, MLP_BLOB_BYTES), "the in-memory blob is not valid");
	return NULL;
}

ZTEST(kilolearn_paged, test_1_trains_in_flash_like_in_memory)
{
	const kl_train_cfg_t cfg = {.lr = LR, .seed = SEED};

	kl_arena_init(&twin_arena, twin_arena_mem, sizeof(twin_arena_mem));
	zassert_ok(kl_model_init(&twin, twin_blob, MLP_BLOB_BYTES, &twin_arena, &cfg));
	paged_mount(SEED);
	zassert_true(pm.paged);
	zassert_true(pm.blob >= part.base && pm.blob < part.base + part.size,
		     "the paged model does not read the partition in place");
	zassert_equal(pm.upd_policy, KL_UPDATE_CHANNEL_NORM);
	zassert_equal(pm.upd_frac, PERMILLE);
	/* what loading cost is not training's */
	part.bytes_written = part.erases = 0;
	memset(wear, 0, sizeof(wear));
	kl_store_set_wear(&part, wear, wear + kl_store_sectors(&part));

	fig.acc0 = accuracy(&pm);
	zassert_equal(fig.acc0, accuracy(&twin));
	for (uint32_t i = 0; i < STEPS; i++) {
		train_both(i);
	}
	fig.steps = STEPS;
	fig.folds = wlog.folds;
	fig.peak = (uint32_t)arena.peak;
	fig.twin_peak = (uint32_t)twin_arena.peak;
	zassert_true(arena.peak <= ARENA);
	zassert_true(wlog.folds >= 1u, "the log never filled: no fold");
	zassert_true(part.bytes_written > 0u && part.erases > 0u);
	const uint32_t moved = compare_with_twin();

	zassert_true(moved > 0u, "training changed no row");
	fig.acc1 = accuracy(&pm);
	zassert_equal(fig.acc1, accuracy(&twin));
	printk("KL paged trained steps=%u folds=%u rows_moved=%u log_pos=%u\n", STEPS,
	       wlog.folds, moved, (unsigned int)wlog.pos);
	fig.trained = 1;
}

ZTEST(kilolearn_paged, test_2_survives_a_remount)
{
	if (!fig.trained) {
		ztest_test_skip();
	}
	fig.crc = model_crc(&pm);
	const uint32_t logged = wlog.pos; /* bytes of records since the last fold */
	/* the int8 update dither and the activation ranges grown in training
	 * (kl_train.c kl_adapt_ranges) are not in the blob: each step's commit record
	 * carries them, and the mount must bring them back */
	const uint32_t dither = pm.dither;
	int8_t exps[MLP_N_OPS + 1u];

	for (uint32_t t = 0; t <= MLP_N_OPS; t++) {
		exps[t] = pm.tensors[t].exp;
		fig.exp_moved += exps[t] != (int8_t)twin_blob[KL_BLOB_HEADER_SIZE +
							      t * KL_BLOB_TENSOR_SIZE + KL_BT_EXP];
	}
	const uint32_t bytes = part.bytes_written, erases = part.erases;

	/* the reboot: nothing of the old RAM state but the flash */
	memset(&pm, 0, sizeof(pm));
	memset(&slots, 0, sizeof(slots));
	memset(&wlog, 0, sizeof(wlog));
	memset(arena_mem, 0x5A, sizeof(arena_mem));
	part_open();
	kl_store_set_wear(&part, wear, wear + kl_store_sectors(&part));
	paged_mount(SEED);
	fig.mounted = wlog.mounted;
	zassert_equal(pm.dither, dither, "the dither did not come back from the log");
	zassert_equal(wlog.mounted > 0u, logged > 0u, "records mounted %u, logged bytes %u",
		      wlog.mounted, logged);
	fig.remount_crc = model_crc(&pm);
	zassert_equal(fig.remount_crc, fig.crc, "the weights after the remount differ");
	for (uint32_t t = 0; t <= MLP_N_OPS; t++) {
		zassert_equal(pm.tensors[t].exp, exps[t], "exponent %u did not come back", t);
	}
	/* training goes on, still the twin's */
	for (uint32_t i = STEPS; i < STEPS + MORE_STEPS; i++) {
		train_both(i);
	}
	compare_with_twin();
	fig.steps += MORE_STEPS;
	fig.folds += wlog.folds;
	fig.peak = MAX(fig.peak, (uint32_t)arena.peak);
	/* a fold on demand: a new generation, the same weights */
	const uint32_t crc = model_crc(&pm);

	zassert_ok(kl_model_fold(&pm));
	fig.folds++;
	zassert_equal(model_crc(&pm), crc);
	zassert_equal(sys_get_le32(pm.blob + KL_BH_CRC), crc);
	zassert_equal(wlog.pos, 0u);
	fig.bytes = bytes + part.bytes_written;
	fig.erases = erases + part.erases;
	for (uint32_t s = 0; s < kl_store_sectors(&part); s++) {
		fig.max_wear = MAX(fig.max_wear, wear[s]);
	}
	printk("KL paged board=%s params=%u blob=%u arena=%u arena_peak=%u twin_arena_peak=%u "
	       "steps=%u steps_before=%u permille=%u folds=%u partition=%u slots=%u log=%u "
	       "erase_block=%u write_block=%u erase_value=0x%02x bytes_programmed=%u "
	       "sectors_erased=%u max_sector_erases=%u mounted_records=%u exp_moved=%u "
	       "acc_before=%u acc_after=%u n_test=%u crc=0x%08x remount_crc=0x%08x\n",
	       CONFIG_BOARD_TARGET, MLP_PARAMS, MLP_BLOB_BYTES, ARENA, fig.peak, fig.twin_peak,
	       fig.steps, STEPS, PERMILLE, fig.folds, (unsigned int)part.size, slot_bytes,
	       (unsigned int)log_st.size, (unsigned int)part.geom.erase_block,
	       (unsigned int)part.geom.write_block, part.geom.erase_value, fig.bytes, fig.erases,
	       fig.max_wear, fig.mounted, fig.exp_moved, fig.acc0, fig.acc1, N_TEST, fig.crc,
	       fig.remount_crc);
}

ZTEST_SUITE(kilolearn_paged, NULL, setup, NULL, NULL, NULL);
