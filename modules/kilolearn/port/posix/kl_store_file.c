/* File-backed NOR flash simulation for the host: see kl_store_file.h. */
#include "posix/kl_store_file.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define HDR 32u

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++) {
		p[i] = (uint8_t)(v >> (8 * i));
	}
}

static uint32_t get32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static void header(uint8_t *h, const kl_store_geom_t *g, uint32_t n_sectors)
{
	memset(h, 0, HDR);
	memcpy(h, "KLNORSIM", 8);
	put32(h + 8, g->size);
	put32(h + 12, g->erase_block);
	put32(h + 16, g->write_block);
	put32(h + 20, g->erase_value);
	put32(h + 24, n_sectors);
}

static int put_at(FILE *f, long off, const void *p, size_t n)
{
	return fseek(f, off, SEEK_SET) == 0 && fwrite(p, 1, n, f) == n ? KL_OK : KL_EIO;
}

/* the image range and the sector's counters, written through (flushed) */
static void on_change(void *ctx, uint32_t off, uint32_t n)
{
	kl_store_t *st = ctx;
	kl_store_file_t *fs = (kl_store_file_t *)st->ctx;
	const uint32_t eb = st->geom.erase_block;
	(void)put_at(fs->f, (long)(HDR + off), fs->image + off, n);
	const uint32_t sec = off / eb;
	if (sec < fs->n_sectors) {
		uint8_t b[4];
		const long wear = (long)HDR + (long)st->geom.size;
		put32(b, fs->wear[sec]);
		(void)put_at(fs->f, wear + 4L * (long)sec, b, 4);
		put32(b, fs->wear[fs->n_sectors + sec]);
		(void)put_at(fs->f, wear + 4L * (long)(fs->n_sectors + sec), b, 4);
	}
	(void)fflush(fs->f); /* in the file when the program ends without closing it (a reset) */
}

static int create(kl_store_file_t *fs, const char *path, const kl_store_geom_t *g)
{
	uint8_t h[HDR];
	fs->f = fopen(path, "w+b");
	if (fs->f == NULL) {
		return KL_EIO;
	}
	header(h, g, fs->n_sectors);
	memset(fs->image, g->erase_value, g->size);
	memset(fs->wear, 0, 8u * fs->n_sectors);
	if (put_at(fs->f, 0, h, HDR) != KL_OK || put_at(fs->f, HDR, fs->image, g->size) != KL_OK) {
		return KL_EIO;
	}
	uint8_t z[4] = {0, 0, 0, 0};
	for (uint32_t i = 0; i < 2u * fs->n_sectors; i++) {
		if (fwrite(z, 1, 4, fs->f) != 4u) {
			return KL_EIO;
		}
	}
	return fflush(fs->f) == 0 ? KL_OK : KL_EIO;
}

int kl_store_file_probe(const char *path, kl_store_geom_t *geom)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		return errno == ENOENT ? KL_ENOENT : KL_EIO;
	}
	uint8_t h[HDR];
	const size_t got = fread(h, 1, HDR, f);
	const int empty = got == 0u && feof(f);
	fclose(f);
	if (empty) {
		return KL_ENOENT; /* nothing to lose: made anew */
	}
	if (got != HDR || memcmp(h, "KLNORSIM", 8) != 0) {
		return KL_ESTOREFILE;
	}
	geom->size = get32(h + 8);
	geom->erase_block = get32(h + 12);
	geom->write_block = get32(h + 16);
	geom->erase_value = (uint8_t)get32(h + 20);
	return KL_OK;
}

/* an existing file of this geometry: image and counters back in memory */
static int reopen(kl_store_file_t *fs, const char *path, const kl_store_geom_t *g)
{
	uint8_t h[HDR], want[HDR];
	fs->f = fopen(path, "r+b");
	if (fs->f == NULL) {
		return KL_EIO;
	}
	header(want, g, fs->n_sectors);
	if (fread(h, 1, HDR, fs->f) != HDR || memcmp(h, want, HDR) != 0 ||
	    fread(fs->image, 1, g->size, fs->f) != g->size) {
		fclose(fs->f);
		fs->f = NULL;
		return KL_ESTOREFILE;
	}
	for (uint32_t i = 0; i < 2u * fs->n_sectors; i++) {
		uint8_t b[4];
		if (fread(b, 1, 4, fs->f) != 4u) {
			fclose(fs->f);
			fs->f = NULL;
			return KL_ESTOREFILE;
		}
		fs->wear[i] = get32(b);
	}
	return KL_OK;
}

int kl_store_file_open(kl_store_t *st, kl_store_file_t *fs, const char *path,
		       const kl_store_geom_t *geom)
{
	memset(fs, 0, sizeof(*fs));
	if (geom == NULL || geom->erase_block == 0u || geom->size % geom->erase_block != 0u) {
		return KL_EINVAL;
	}
	fs->n_sectors = geom->size / geom->erase_block;
	fs->image = malloc(geom->size);
	fs->wear = calloc(2u * fs->n_sectors, sizeof(uint32_t));
	if (fs->image == NULL || fs->wear == NULL) {
		free(fs->image);
		free(fs->wear);
		return KL_EIO;
	}
	int err = kl_store_nor_init(st, &fs->sim, fs->image, geom);
	if (err == KL_OK) {
		/* only a missing (or empty) file is made anew: a file holding
		 * anything else, another geometry's image among it, is refused and
		 * left as it is */
		kl_store_geom_t had;
		err = kl_store_file_probe(path, &had);
		if (err == KL_ENOENT) {
			err = create(fs, path, geom);
		} else if (err == KL_OK) {
			err = reopen(fs, path, geom);
		}
	}
	if (err != KL_OK) {
		if (fs->f != NULL) {
			fclose(fs->f);
		}
		free(fs->image);
		free(fs->wear);
		memset(fs, 0, sizeof(*fs));
		return err;
	}
	setvbuf(fs->f, NULL, _IONBF, 0); /* every step on disk at once */
	st->ctx = &fs->sim;
	fs->sim.on_change = on_change;
	fs->sim.change_ctx = st;
	kl_store_set_wear(st, fs->wear, fs->wear + fs->n_sectors);
	return KL_OK;
}

void kl_store_file_close(kl_store_t *st)
{
	kl_store_file_t *fs = (kl_store_file_t *)st->ctx;
	if (fs == NULL || fs->f == NULL) {
		return;
	}
	uint8_t b[4];
	(void)fseek(fs->f, (long)(HDR + st->geom.size), SEEK_SET);
	for (uint32_t i = 0; i < 2u * fs->n_sectors; i++) {
		put32(b, fs->wear[i]);
		(void)fwrite(b, 1, 4, fs->f);
	}
	fclose(fs->f);
	free(fs->image);
	free(fs->wear);
	memset(fs, 0, sizeof(*fs));
	memset(st, 0, sizeof(*st));
}

static int num(const char **p, uint32_t *out)
{
	char *end;
	unsigned long v = strtoul(*p, &end, 0);
	if (end == *p) {
		return 0;
	}
	if (*end == 'K' || *end == 'k') {
		v *= 1024ul;
		end++;
	} else if (*end == 'M' || *end == 'm') {
		v *= 1024ul * 1024ul;
		end++;
	}
	if (v > 0xFFFFFFFFul) {
		return 0;
	}
	*out = (uint32_t)v;
	*p = end;
	return 1;
}

int kl_store_geom_parse(const char *text, kl_store_geom_t *geom)
{
	uint32_t v[4];
	const char *p = text;
	for (int i = 0; i < 4; i++) {
		if (!num(&p, &v[i]) || *p != (i < 3 ? ',' : '\0')) {
			return KL_EINVAL;
		}
		if (i < 3) {
			p++;
		}
	}
	geom->size = v[0];
	geom->erase_block = v[1];
	geom->write_block = v[2];
	geom->erase_value = (uint8_t)v[3];
	return v[3] == 0xFFu || v[3] == 0u ? KL_OK : KL_EINVAL;
}
