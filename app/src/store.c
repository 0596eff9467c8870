/*
 * The app's weight store (docs/flash-store.md). The store is a fixed
 * partition through flash_area where CONFIG_KILOLEARN_APP_FLASH_STORE is on:
 * the kilolearn_weights partition if the devicetree has one (every overlay
 * in app/boards defines one), else the board's storage_partition. On it, read/program/erase map to flash_area_read,
 * flash_area_write and flash_area_erase, and the geometry comes from the
 * driver: erase value and write block size (flash_get_parameters), the
 * erase page size (flash_get_page_info_by_offs, checked uniform over the
 * partition). The session reads frozen weights in place, so the store needs
 * the partition's memory-mapped address: the simulator's buffer
 * (flash_simulator_get_memory) on the flash simulator, the flash's own
 * address for SoC flash (soc-nv-flash), the FlexSPI AHB window for a
 * FlexSPI NOR. Generations written by COMMIT survive a reboot there.
 * Without either partition, or without a flash driver (CONFIG_FLASH_MAP off,
 * as Kconfig forces on boards such as mps2/an521 or qemu_riscv32), or with
 * the option off, the store is RAM, CONFIG_KILOLEARN_APP_STORE_SIZE bytes,
 * lost at reset, and a warning says so at boot.
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>

#include <zephyr/devicetree.h>
#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#if defined(CONFIG_FLASH_MAP)
#include <zephyr/drivers/flash.h>
#include <zephyr/storage/flash_map.h>
#endif

#include "store.h"
#if defined(CONFIG_FLASH_MAP)
#include "zephyr/kl_store_flash_area.h"
#endif

LOG_MODULE_DECLARE(kilolearn_app, CONFIG_KILOLEARN_APP_LOG_LEVEL);

/* The partition of the store: kilolearn_weights, else storage_partition.
 * DT_FIXED_PARTITION_EXISTS (devicetree.h) is defined whatever Kconfig says,
 * unlike flash_map.h's FIXED_PARTITION_EXISTS, so each test is a whole #if. */
#define KL_HAVE_PARTITION 0
#if defined(CONFIG_FLASH_MAP)
#if DT_FIXED_PARTITION_EXISTS(DT_NODELABEL(kilolearn_weights))
#undef KL_HAVE_PARTITION
#define KL_HAVE_PARTITION 1
#define KL_PART_NODE      DT_NODELABEL(kilolearn_weights)
#define KL_PART_NAME      "kilolearn_weights"
#elif DT_FIXED_PARTITION_EXISTS(DT_NODELABEL(storage_partition))
#undef KL_HAVE_PARTITION
#define KL_HAVE_PARTITION 1
#define KL_PART_NODE      DT_NODELABEL(storage_partition)
#define KL_PART_NAME      "storage_partition"
#endif
#endif

static kl_store_t store;
/* with CONFIG_KILOLEARN_APP_WEIGHT_LOG_SIZE or _REPLAY_FLASH_SIZE: the whole
 * store, its last part as a paged model's weight log (docs/paged-weights.md)
 * and the part before that as a flash replay buffer's latents
 * (docs/replay.md) */
static kl_store_t part, log_part, replay_part;
static int have_log, have_replay;

/* Split the store at *st into the generations, the replay latents and the
 * weight log; *st becomes the generations' part. */
static int split_log(kl_store_t **st)
{
	const uint32_t log = (uint32_t)CONFIG_KILOLEARN_APP_WEIGHT_LOG_SIZE;
	const uint32_t rep = (uint32_t)CONFIG_KILOLEARN_APP_REPLAY_FLASH_SIZE;

	if (log == 0u && rep == 0u) {
		return 0;
	}
	part = **st;
	const uint32_t size = part.geom.size;

	if ((uint64_t)log + rep >= size ||
	    (log != 0u && kl_store_sub_init(&log_part, &part, size - log, log) != KL_OK) ||
	    (rep != 0u && kl_store_sub_init(&replay_part, &part, size - log - rep, rep) != KL_OK) ||
	    kl_store_sub_init(&store, &part, 0, size - log - rep) != KL_OK) {
		LOG_ERR("weight log %u and replay %u bytes: not whole erase pages of the %u-byte "
			"store", (unsigned int)log, (unsigned int)rep, (unsigned int)size);
		return -EINVAL;
	}
	*st = &store;
	have_log = log != 0u;
	have_replay = rep != 0u;
	LOG_INF("store: %u bytes for generations, %u for replay latents, %u for the weight log",
		(unsigned int)(size - log - rep), (unsigned int)rep, (unsigned int)log);
	return 0;
}

kl_store_t *app_store_log(void)
{
	return have_log ? &log_part : NULL;
}

kl_store_t *app_store_replay(void)
{
	return have_replay ? &replay_part : NULL;
}

#if KL_HAVE_PARTITION && defined(CONFIG_KILOLEARN_APP_FLASH_STORE)

#define KL_FLASH_NODE DT_GPARENT(KL_PART_NODE) /* partition -> partitions -> flash */
#define KL_CTRL_NODE  DT_PARENT(KL_FLASH_NODE)

#if DT_NODE_HAS_COMPAT(KL_CTRL_NODE, zephyr_sim_flash)
#include <zephyr/drivers/flash/flash_simulator.h>
#endif

static const struct flash_area *store_fa;
static uint32_t wear[2u * CONFIG_KILOLEARN_APP_STORE_MAX_SECTORS];

/* The partition's memory-mapped address (the engine reads frozen weights
 * through it), or NULL. */
static const uint8_t *partition_xip(const struct device *dev, const struct flash_area *fa)
{
#if DT_NODE_HAS_COMPAT(KL_CTRL_NODE, zephyr_sim_flash)
	size_t sim_size;
	uint8_t *mem = flash_simulator_get_memory(dev, &sim_size);

	if (mem == NULL || (size_t)fa->fa_off + fa->fa_size > sim_size) {
		return NULL;
	}
	return mem + fa->fa_off;
#elif DT_NODE_HAS_COMPAT(KL_CTRL_NODE, nxp_imx_flexspi) && DT_REG_HAS_IDX(KL_CTRL_NODE, 1)
	ARG_UNUSED(dev);
	return (const uint8_t *)(uintptr_t)(DT_REG_ADDR_BY_IDX(KL_CTRL_NODE, 1) + fa->fa_off);
#elif DT_NODE_HAS_COMPAT(KL_FLASH_NODE, soc_nv_flash)
	ARG_UNUSED(dev);
	return (const uint8_t *)(uintptr_t)(DT_REG_ADDR(KL_FLASH_NODE) + fa->fa_off);
#else
	ARG_UNUSED(dev);
	ARG_UNUSED(fa);
	return NULL;
#endif
}

int app_store_flash_open(kl_store_t *st)
{
	int err = 0;

	if (store_fa == NULL) {
		err = flash_area_open(DT_FIXED_PARTITION_ID(KL_PART_NODE), &store_fa);
		if (err != 0) {
			LOG_ERR(KL_PART_NAME ": flash_area_open failed (%d)", err);
			store_fa = NULL;
			return err;
		}
	}
	const struct flash_area *fa = store_fa;
	const struct device *dev = flash_area_get_device(fa);

	if (dev == NULL || !device_is_ready(dev)) {
		LOG_ERR(KL_PART_NAME ": flash device not ready");
		return -ENODEV;
	}
	const struct flash_parameters *fp = flash_get_parameters(dev);
	struct flash_pages_info page;

	err = flash_get_page_info_by_offs(dev, fa->fa_off, &page);
	if (err != 0) {
		LOG_ERR(KL_PART_NAME ": no page info (%d)", err);
		return err;
	}
	/* the store wants uniform sectors: check every page of the partition */
	const uint32_t eb = (uint32_t)page.size;

	for (uint32_t o = eb; o < fa->fa_size; o += eb) {
		struct flash_pages_info p;

		if (flash_get_page_info_by_offs(dev, fa->fa_off + o, &p) != 0 || p.size != eb ||
		    (uint32_t)p.start_offset != (uint32_t)fa->fa_off + o) {
			LOG_ERR(KL_PART_NAME ": erase pages not uniform at +0x%x", (unsigned int)o);
			return -ENOTSUP;
		}
	}
	if ((uint32_t)page.start_offset != (uint32_t)fa->fa_off) {
		LOG_ERR(KL_PART_NAME ": does not start on an erase page");
		return -ENOTSUP;
	}
	const uint8_t *xip = partition_xip(dev, fa);

	if (xip == NULL) {
		LOG_ERR(KL_PART_NAME ": not memory-mapped (the model reads it in place)");
		return -ENOTSUP;
	}
	if (((uintptr_t)xip & 3u) != 0u) {
		LOG_ERR(KL_PART_NAME ": mapped at %p, not 4-byte aligned", (const void *)xip);
		return -ENOTSUP;
	}
	const kl_store_geom_t g = {
		.size = (uint32_t)fa->fa_size / eb * eb,
		.erase_block = eb,
		.write_block = (uint32_t)fp->write_block_size,
		.erase_value = fp->erase_value,
	};
	if (g.size == 0u || g.write_block == 0u || g.write_block > KL_STORE_MAX_WRITE_BLOCK ||
	    (g.write_block & (g.write_block - 1u)) != 0u || eb % g.write_block != 0u ||
	    (g.erase_value != 0x00u && g.erase_value != 0xFFu)) {
		LOG_ERR(KL_PART_NAME ": geometry the store cannot use (write block %u, "
			"erase value 0x%02x)",
			(unsigned int)g.write_block, g.erase_value);
		return -ENOTSUP;
	}
	kl_store_flash_area_init(st, fa, &g, xip);
	if (kl_store_sectors(st) <= CONFIG_KILOLEARN_APP_STORE_MAX_SECTORS) {
		memset(wear, 0, sizeof(wear));
		kl_store_set_wear(st, wear, wear + kl_store_sectors(st));
	}
	LOG_INF("store: " KL_PART_NAME " on %s at 0x%lx, %u bytes, erase value 0x%02x, "
		"write block %u, erase page %u, mapped at %p",
		dev->name, (unsigned long)fa->fa_off, (unsigned int)g.size, g.erase_value,
		(unsigned int)g.write_block, (unsigned int)eb, (const void *)xip);
	return 0;
}

int app_store_init(kl_store_t **out)
{
	const int err = app_store_flash_open(&store);

	if (err != 0) {
		return err;
	}
	*out = &store;
	return split_log(out);
}

#else /* RAM store */

BUILD_ASSERT(CONFIG_KILOLEARN_APP_STORE_SIZE % 4 == 0, "store size must be a multiple of 4");

static uint32_t store_mem[CONFIG_KILOLEARN_APP_STORE_SIZE / 4];

int app_store_init(kl_store_t **out)
{
	kl_store_ram_init(&store, (uint8_t *)store_mem, sizeof(store_mem));
	*out = &store;
	LOG_WRN("store: RAM, %u bytes, lost at reset (%s)", (unsigned int)store.size,
		KL_HAVE_PARTITION ? "CONFIG_KILOLEARN_APP_FLASH_STORE is off"
		: IS_ENABLED(CONFIG_FLASH_MAP) ? "no kilolearn_weights or storage_partition"
		: "no flash map: no flash driver, or CONFIG_FLASH_MAP off");
	return split_log(out);
}

#endif

#if KL_HAVE_PARTITION && defined(CONFIG_KILOLEARN_APP_FLASH_PROBE)
int app_store_probe_partition(void)
{
	const struct flash_area *fa;
	int err = flash_area_open(DT_FIXED_PARTITION_ID(KL_PART_NODE), &fa);

	if (err != 0) {
		LOG_ERR(KL_PART_NAME ": flash_area_open failed (%d)", err);
		return err;
	}
	const struct device *dev = flash_area_get_device(fa);

	if (dev == NULL || !device_is_ready(dev)) {
		LOG_ERR(KL_PART_NAME ": flash device not ready");
		flash_area_close(fa);
		return -ENODEV;
	}
	const struct flash_parameters *fp = flash_get_parameters(dev);
	struct flash_pages_info page;

	err = flash_get_page_info_by_offs(dev, fa->fa_off, &page);
	if (err == 0) {
		LOG_INF(KL_PART_NAME ": %s at 0x%lx, %u bytes, erase value 0x%02x, "
			"write block %u, erase page %u",
			dev->name, (unsigned long)fa->fa_off, (unsigned int)fa->fa_size,
			fp->erase_value, (unsigned int)fp->write_block_size,
			(unsigned int)page.size);
	} else {
		LOG_ERR(KL_PART_NAME ": no page info (%d)", err);
	}
	flash_area_close(fa);
	return err;
}
#else
int app_store_probe_partition(void)
{
	return -ENOENT;
}
#endif
