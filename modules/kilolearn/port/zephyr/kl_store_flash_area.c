/* The weight store over a Zephyr flash area (kl_store_flash_area.h). */
#include "kl_store_flash_area.h"

static int fa_read(kl_store_t *st, uint32_t off, uint8_t *buf, uint32_t n)
{
	return flash_area_read(st->ctx, (off_t)off, buf, n) == 0 ? KL_OK : KL_EIO;
}

static int fa_program(kl_store_t *st, uint32_t off, const uint8_t *data, uint32_t n)
{
	return flash_area_write(st->ctx, (off_t)off, data, n) == 0 ? KL_OK : KL_EIO;
}

static int fa_erase(kl_store_t *st, uint32_t off, uint32_t n)
{
	return flash_area_erase(st->ctx, (off_t)off, n) == 0 ? KL_OK : KL_EIO;
}

static const kl_store_ops_t fa_ops = {fa_read, fa_program, fa_erase};

void kl_store_flash_area_init(kl_store_t *st, const struct flash_area *fa,
			      const kl_store_geom_t *g, const uint8_t *xip)
{
	*st = (kl_store_t){
		.ops = &fa_ops,
		.geom = *g,
		.base = xip,
		.size = g->size,
		.ctx = (void *)fa,
	};
}
