/*
 * Host weight store: the NOR flash simulation (kl_store.h) backed by a file,
 * so that the flash contents and the wear counters survive a process restart
 * (a "reboot"). Every step that reaches the cells is written through to the
 * file at once; a power cut injected with kl_store_nor_cut() leaves in the
 * file exactly what the simulated part would hold.
 *
 * File layout (little-endian): a 32-byte header ("KLNORSIM", u32 size,
 * erase block, write block, erase value, sectors, 0), the image, then per
 * sector u32 erase counts and u32 bytes programmed.
 */
#ifndef KL_STORE_FILE_H
#define KL_STORE_FILE_H

#include <stdio.h>

#include "kilolearn/kl_store.h"

typedef struct {
	kl_nor_sim_t sim;
	FILE *f;
	uint8_t *image;      /* malloc'd: the port may allocate, the engine never does */
	uint32_t *wear;      /* erases[sectors], bytes[sectors] */
	uint32_t n_sectors;
	int dirty_wear;
} kl_store_file_t;

#define KL_ENOENT     (-2)   /* no such file */
#define KL_ESTOREFILE (-210) /* the file is not a store image of the asked geometry */

/* Open the store image at path, or create it (erased) when the file is
 * missing or empty. A file that holds anything else (another geometry's
 * image, or not an image at all) is refused with KL_ESTOREFILE and left
 * untouched: kl_store_file_probe() tells its geometry. KL_OK, KL_EINVAL
 * (geometry), KL_ESTOREFILE or KL_EIO (file). */
int kl_store_file_open(kl_store_t *st, kl_store_file_t *fs, const char *path,
		       const kl_store_geom_t *geom);
/* The geometry recorded in the image at path: KL_OK, KL_ENOENT (missing or
 * empty), KL_ESTOREFILE (not a store image) or KL_EIO. */
int kl_store_file_probe(const char *path, kl_store_geom_t *geom);
/* Write the wear counters out and close: a clean shutdown. Dropping the
 * struct without it is a power cut (the image is always up to date, the
 * counters of the last operation may be lost). */
void kl_store_file_close(kl_store_t *st);
/* Parse "SIZE,ERASE,WRITE,EV" (decimal or 0x hex; K/M suffixes) */
int kl_store_geom_parse(const char *text, kl_store_geom_t *geom);

#endif /* KL_STORE_FILE_H */
