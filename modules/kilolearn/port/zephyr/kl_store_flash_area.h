/*
 * A kilolearn weight store (kl_store.h) over a Zephyr flash area: read,
 * program and erase map to flash_area_read, flash_area_write and
 * flash_area_erase (a failure is KL_EIO). The caller gives the geometry
 * (from the flash driver) and the memory-mapped address the engine reads in
 * place (app/src/store.c finds both for the kilolearn_weights partition).
 */
#ifndef KL_STORE_FLASH_AREA_H
#define KL_STORE_FLASH_AREA_H

#include <zephyr/storage/flash_map.h>

#include "kilolearn/kl_store.h"

/* st over fa: geometry g, mapped at xip. */
void kl_store_flash_area_init(kl_store_t *st, const struct flash_area *fa,
			      const kl_store_geom_t *g, const uint8_t *xip);

#endif /* KL_STORE_FLASH_AREA_H */
