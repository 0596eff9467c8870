/*
 * Weight store adapter. For now a RAM store of CONFIG_KILOLEARN_APP_STORE_SIZE
 * bytes (kl_store_ram_init from the session core). The flash store replaces
 * app_store_init() with one over flash_area_open(FIXED_PARTITION_ID(
 * kilolearn_weights)); app_store_probe_partition() already reads what it needs
 * from the driver: erase value, write block size and erase page size.
 */
#include <errno.h>
#include <stdint.h>

#include <zephyr/kernel.h>
#include <zephyr/logging/log.h>

#ifdef CONFIG_KILOLEARN_APP_FLASH_PROBE
#include <zephyr/drivers/flash.h>
#include <zephyr/storage/flash_map.h>
#endif

#include "store.h"

LOG_MODULE_DECLARE(kilolearn_app, CONFIG_KILOLEARN_APP_LOG_LEVEL);

BUILD_ASSERT(CONFIG_KILOLEARN_APP_STORE_SIZE % 4 == 0, "store size must be a multiple of 4");

static uint32_t store_mem[CONFIG_KILOLEARN_APP_STORE_SIZE / 4];
static kl_store_t store;

int app_store_init(kl_store_t **out)
{
	kl_store_ram_init(&store, (uint8_t *)store_mem, sizeof(store_mem));
	*out = &store;
	LOG_INF("store: RAM, %u bytes", (unsigned int)store.size);
	return 0;
}

#if defined(CONFIG_KILOLEARN_APP_FLASH_PROBE)
#define KL_HAVE_WEIGHTS_PARTITION FIXED_PARTITION_EXISTS(kilolearn_weights)
#else
#define KL_HAVE_WEIGHTS_PARTITION 0
#endif

#if KL_HAVE_WEIGHTS_PARTITION
int app_store_probe_partition(void)
{
	const struct flash_area *fa;
	int err = flash_area_open(FIXED_PARTITION_ID(kilolearn_weights), &fa);

	if (err != 0) {
		LOG_ERR("kilolearn_weights: flash_area_open failed (%d)", err);
		return err;
	}
	const struct device *dev = flash_area_get_device(fa);

	if (dev == NULL || !device_is_ready(dev)) {
		LOG_ERR("kilolearn_weights: flash device not ready");
		flash_area_close(fa);
		return -ENODEV;
	}
	const struct flash_parameters *fp = flash_get_parameters(dev);
	struct flash_pages_info page;

	err = flash_get_page_info_by_offs(dev, fa->fa_off, &page);
	if (err == 0) {
		LOG_INF("kilolearn_weights: %s at 0x%lx, %u bytes, erase value 0x%02x, "
			"write block %u, erase page %u",
			dev->name, (unsigned long)fa->fa_off, (unsigned int)fa->fa_size,
			fp->erase_value, (unsigned int)fp->write_block_size,
			(unsigned int)page.size);
	} else {
		LOG_ERR("kilolearn_weights: no page info (%d)", err);
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
