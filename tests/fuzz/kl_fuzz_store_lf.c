/*
 * libFuzzer target: the weight store on random images (docs/flash-store.md).
 * A store image is crafted from the input (slot headers with any sequence
 * number, valid or broken CRCs, copies, random bytes), then mounted
 * (kl_slots_mount), a session boots on it, LOADs a small valid blob, trains,
 * COMMITs twice, with a "reboot" (mount again over the same memory) after
 * each write.
 *
 * Input:
 *   byte 0  bits 0-2 geometry (GEOMS; 5 is the RAM store), bit 3 the f32 blob
 *           (else int8), bits 4-6 == 7: also the host file store (below)
 *   byte 1  chunk size of the LOAD (x 8 bytes, 0: 2043)
 *   then records, op % 5:
 *     0 SLOT   sector u16, seq u32, kind u8: kind & 3 = 0/1 an embedded blob
 *              (kl_fuzz_blobs.h), 2 the bytes already there (len u16), 3 an embedded
 *              blob with a byte patched (at u16, val u8); kind bits 2..6 break the
 *              magic, the header CRC, the blob CRC, the data offset, or set a random
 *              length (u32)
 *     1 BYTES  offset u32, n u8, n bytes
 *     2 FILL   offset u32, n u16, value u8
 *     3 ERASE  sector u16
 *     4 COPY   sector u16 -> sector u16
 *
 * Checked (besides ASan/UBSan):
 *   - mount: a valid slot in the image means a generation is active, and the
 *     active one is a valid slot (magic, header CRC, data offset, blob CRC);
 *   - writing a generation (LOAD, COMMIT) never changes the bytes of the active
 *     slot, nor (COMMIT) of the pinned slot the running model reads;
 *   - a LOAD/COMMIT that succeeded is what the next boot finds: after a reboot
 *     the active generation is that slot (so a crafted sequence number such as
 *     0xFFFFFFFF must not make a later commit vanish), and the LOADed blob is
 *     there byte for byte;
 *   - host file store (port/posix): an existing, well-formed store file opened
 *     with another geometry is left as it is (not wiped).
 */
#include <unistd.h>

#include "kl_fuzz_lf.h"
#include "kl_fuzz_blobs.h"
#include "posix/kl_store_file.h"

#define RAM_GEOM 5u
static const kl_store_geom_t GEOMS[8] = {
	{64u * 1024u, 4096u, 16u, 0xFFu},
	{32u * 1024u, 2048u, 8u, 0x00u},
	{64u * 1024u, 8192u, 64u, 0xFFu},
	{16u * 1024u, 1024u, 1u, 0xFFu},
	{48u * 1024u, 4096u, 256u, 0x00u},
	{32u * 1024u, KL_STORE_RAM_SECTOR, 1u, 0xFFu}, /* RAM store */
	{8u * 1024u, 512u, 32u, 0xFFu},
	{24u * 1024u, 8192u, 4u, 0xFFu},
};

static fz_harness_t H;
static uint8_t before[FZ_STORE_MAX];
static uint8_t sample_buf[2u + 4u * 256u];

/* ---- the image ------------------------------------------------------------------ */

static void put_slot(fz_in_t *in, const kl_store_geom_t *g)
{
	uint8_t *mem = fz_mem();
	const uint32_t n_sec = g->size / g->erase_block;
	const uint32_t off = (fz_u16(in) % n_sec) * g->erase_block;
	const uint32_t seq = fz_u32(in);
	const uint8_t kind = fz_u8(in);
	const uint32_t d = fz_data_off(g);
	const uint32_t room = g->size - off - d;
	uint32_t len;
	if ((kind & 3u) == 2u) {
		len = 1u + fz_u16(in) % room;
	} else {
		const fz_blob_t *b = &FZ_BLOBS[(kind & 1u) % FZ_N_BLOBS];
		len = b->len < room ? b->len : room;
		memcpy(mem + off + d, b->data, len);
		if ((kind & 3u) == 3u) {
			const uint16_t at = fz_u16(in);
			mem[off + d + at % len] = fz_u8(in);
		}
	}
	const uint32_t crc = kl_crc32(0, mem + off + d, len) ^ ((kind & 16u) ? 1u : 0u);
	const uint32_t hlen = (kind & 64u) ? fz_u32(in) : len;
	memset(mem + off, g->erase_value, d);
	fz_put_header(mem + off, seq, hlen, crc, (kind & 32u) ? d + 4u : d);
	if (kind & 4u) {
		mem[off] ^= 0x40u; /* the magic */
	}
	if (kind & 8u) {
		mem[off + 20] ^= 0x01u; /* the header CRC */
	}
}

static void build_image(fz_in_t *in, const kl_store_geom_t *g)
{
	uint8_t *mem = fz_mem();
	const uint32_t eb = g->erase_block, n_sec = g->size / eb;
	memset(mem, g->erase_value, g->size);
	for (int rec = 0; rec < 64 && fz_left(in) > 0u; rec++) {
		switch (fz_u8(in) % 5u) {
		case 0:
			put_slot(in, g);
			break;
		case 1: {
			const uint32_t off = fz_u32(in) % g->size;
			size_t n;
			const uint8_t *p = fz_take(in, fz_u8(in), &n);
			n = n < g->size - off ? n : g->size - off;
			memcpy(mem + off, p, n);
			break;
		}
		case 2: {
			const uint32_t off = fz_u32(in) % g->size;
			uint32_t n = fz_u16(in);
			const uint8_t v = fz_u8(in);
			n = n < g->size - off ? n : g->size - off;
			memset(mem + off, v, n);
			break;
		}
		case 3:
			memset(mem + (fz_u16(in) % n_sec) * eb, g->erase_value, eb);
			break;
		default: {
			const uint32_t a = fz_u16(in) % n_sec, b = fz_u16(in) % n_sec;
			memmove(mem + b * eb, mem + a * eb, eb);
			break;
		}
		}
	}
}

/* ---- host file store: opening an existing file with another geometry ------------ */

static void file_header(uint8_t *h, const kl_store_geom_t *g)
{
	memset(h, 0, 32);
	memcpy(h, "KLNORSIM", 8);
	fz_wr32(h + 8, g->size);
	fz_wr32(h + 12, g->erase_block);
	fz_wr32(h + 16, g->write_block);
	fz_wr32(h + 20, g->erase_value);
	fz_wr32(h + 24, g->size / g->erase_block);
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	FZ_CHECK(f != NULL, "cannot read %s back", path);
	const size_t n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

static void file_store(const kl_store_geom_t *file_g, const kl_store_geom_t *open_g)
{
	static uint8_t img[32u + FZ_STORE_MAX + 8u * 256u], back[sizeof(img) + 1u];
	char path[64];
	snprintf(path, sizeof(path), "/tmp/kl_fuzz_store_%ld.img", (long)getpid());
	const uint32_t n_sec = file_g->size / file_g->erase_block;
	file_header(img, file_g);
	memcpy(img + 32, fz_mem(), file_g->size);
	for (uint32_t i = 0; i < 2u * n_sec; i++) {
		fz_wr32(img + 32u + file_g->size + 4u * i, i * 3u); /* wear counters */
	}
	const size_t len = 32u + file_g->size + 8u * n_sec;
	FILE *f = fopen(path, "wb");
	FZ_CHECK(f != NULL && fwrite(img, 1, len, f) == len, "cannot write %s", path);
	fclose(f);
	kl_store_t st;
	kl_store_file_t fs;
	const int err = kl_store_file_open(&st, &fs, path, open_g);
	const int same = file_g->size == open_g->size && file_g->erase_block == open_g->erase_block &&
			 file_g->write_block == open_g->write_block &&
			 file_g->erase_value == open_g->erase_value;
	if (err == KL_OK) {
		if (same) {
			FZ_CHECK(memcmp(fs.image, fz_mem(), file_g->size) == 0,
				 "the file store reopened its own file with another image");
		}
		kl_store_file_close(&st);
	}
	if (same) {
		FZ_CHECK(err == KL_OK, "the file store refused its own file: %d", err);
	}
	const size_t n = read_file(path, back, sizeof(back));
	FZ_CHECK(n == len && memcmp(back, img, len) == 0, "an existing store file of geometry "
		 "%u,%u,%u,%#x opened as %u,%u,%u,%#x (%d) was changed: %zu bytes now, %zu before",
		 file_g->size, file_g->erase_block, file_g->write_block, file_g->erase_value,
		 open_g->size, open_g->erase_block, open_g->write_block, open_g->erase_value, err, n,
		 len);
	remove(path);
}

/* ---- a write of a generation, checked ------------------------------------------- */

typedef struct {
	uint32_t off, end; /* a slot's bytes: header to the blob's end */
} span_t;

static span_t slot_span(const fz_stats_t *s)
{
	span_t sp = {0, 0};
	if (s->slot_off != 0xFFFFFFFFu) {
		const fz_slot_t sl = fz_slot_at(fz_mem(), &H.geom, s->slot_off);
		sp.off = s->slot_off;
		sp.end = s->slot_off + fz_data_off(&H.geom) + sl.len;
	}
	return sp;
}

static void unchanged(const span_t *sp, const char *what, const char *during)
{
	FZ_CHECK(sp->end <= sp->off || memcmp(fz_mem() + sp->off, before + sp->off,
					      sp->end - sp->off) == 0,
		 "%s changed the %s slot at %#x", during, what, sp->off);
}

/* After a write that succeeded: the next boot finds exactly that generation.
 * A second device over the same memory boots (a boot only reads the store),
 * while the first one keeps running. */
static fz_harness_t H2;
static uint32_t arena2[FZ_ARENA_MAX / 4u];

static void boot_finds(const fz_stats_t *s, const char *what)
{
	memset(&H2, 0, sizeof(H2));
	H2.geom = H.geom;
	H2.ram = H.ram;
	H2.arena = (uint8_t *)arena2;
	H2.arena_size = sizeof(arena2);
	FZ_CHECK(fz_boot(&H2) == KL_OK, "no boot after %s", what);
	const fz_stats_t r = fz_check_active(&H2, "at the next boot");
	FZ_CHECK(r.generation == s->generation && r.slot_off == s->slot_off,
		 "%s wrote generation %u at %#x, but the next boot comes up with generation %u at %#x",
		 what, s->generation, s->slot_off, r.generation, r.slot_off);
	FZ_CHECK(fz_info(&H2).loaded, "%s: the next boot has no model", what);
}

/* the session itself rebooted: it comes up with that generation and a model */
static void reboot_finds(const fz_stats_t *s, const char *what)
{
	FZ_CHECK(fz_boot(&H) == KL_OK, "no boot after %s", what);
	const fz_stats_t r = fz_check_active(&H, "after a reboot");
	FZ_CHECK(r.generation == s->generation && r.slot_off == s->slot_off,
		 "%s wrote generation %u at %#x, but the rebooted session has generation %u at %#x",
		 what, s->generation, s->slot_off, r.generation, r.slot_off);
	const fz_info_t i = fz_info(&H);
	FZ_CHECK(i.loaded, "%s: rebooted without a model", what);
}

static void train(const fz_info_t *info, int k)
{
	const uint8_t src[3] = {(uint8_t)(17 * k), 200, 3};
	const size_t n = fz_sample(sample_buf, info, (uint16_t)(k % info->classes), 1, src, 3, 0);
	FZ_CHECK(fz_request(&H, KL_CMD_TRAIN, sample_buf, n) == KL_OK, "TRAIN failed: %d",
		 (int)H.r.status);
}

static void commit(const span_t *pin, fz_stats_t *last)
{
	const fz_stats_t s0 = fz_check_active(&H, "before a COMMIT");
	const span_t act = slot_span(&s0);
	memcpy(before, fz_mem(), H.geom.size);
	const int32_t err = fz_request(&H, KL_CMD_COMMIT, NULL, 0);
	const fz_stats_t s1 = fz_check_active(&H, "after a COMMIT");
	unchanged(&act, "active", "a COMMIT");
	unchanged(pin, "pinned", "a COMMIT");
	if (err != KL_OK) {
		FZ_CHECK(err == KL_ENOSPC, "COMMIT failed with %d", (int)err);
		FZ_CHECK(s1.generation == s0.generation && s1.slot_off == s0.slot_off,
			 "a failed COMMIT moved the active generation");
		return;
	}
	FZ_CHECK(s1.slot_off != s0.slot_off, "COMMIT reported the old slot");
	boot_finds(&s1, "a COMMIT");
	*last = s1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_in_t in = {data, size, 0};
	const uint8_t cfg = fz_u8(&in);
	const uint8_t chunk8 = fz_u8(&in);
	const kl_store_geom_t *g = &GEOMS[cfg & 7u];
	const fz_blob_t *blob = &FZ_BLOBS[((cfg >> 3) & 1u) % FZ_N_BLOBS];
	memset(&H, 0, sizeof(H));
	H.geom = *g;
	H.ram = (cfg & 7u) == RAM_GEOM;
	H.arena_size = FZ_ARENA_MAX;
	build_image(&in, g);
	if (((cfg >> 4) & 7u) == 7u) {
		/* the same image in a store file written for another geometry */
		file_store(&GEOMS[(cfg + 1u + (chunk8 & 3u)) & 7u], g);
		file_store(g, g);
	}

	/* mount */
	fz_store_attach(&H);
	kl_slots_t slots;
	FZ_CHECK(kl_slots_mount(&slots, &H.st) == KL_OK, "mount refused geometry %u", cfg & 7u);
	int any_valid = 0;
	for (uint32_t off = 0; off < g->size; off += g->erase_block) {
		any_valid |= fz_slot_at(fz_mem(), g, off).valid;
	}
	if (slots.have_active) {
		const fz_slot_t a = fz_slot_at(fz_mem(), g, slots.active.off);
		FZ_CHECK(a.valid && a.seq == slots.active.seq && a.len == slots.active.len,
			 "mount chose slot %#x (seq %llu), which is not a valid slot", slots.active.off,
			 (unsigned long long)slots.active.seq);
	} else {
		FZ_CHECK(!any_valid, "the image has a valid slot but mount found none");
	}

	/* boot, LOAD */
	FZ_CHECK(fz_boot(&H) == KL_OK, "the session does not start on the image");
	const fz_stats_t s0 = fz_check_active(&H, "at boot");
	const span_t act0 = slot_span(&s0);
	memcpy(before, fz_mem(), g->size);
	const uint32_t chunk = chunk8 ? 8u * chunk8 : KL_SESSION_MAX_PAYLOAD - 5u;
	const int32_t err = fz_load(&H, blob->data, blob->len, chunk,
				    kl_crc32(0, blob->data, blob->len), 0);
	unchanged(&act0, "active", "a LOAD");
	if (err != KL_OK) {
		FZ_CHECK(err == KL_ENOSPC, "LOAD of a valid blob failed with %d", (int)err);
		return 0;
	}
	const fz_stats_t s1 = fz_check_active(&H, "after a LOAD");
	const fz_slot_t sl = fz_slot_at(fz_mem(), g, s1.slot_off);
	FZ_CHECK(sl.len == blob->len && memcmp(sl.blob, blob->data, blob->len) == 0,
		 "LOAD OK but the active blob is not the one sent");
	boot_finds(&s1, "a LOAD");

	/* the model runs from (pins) the LOADed slot; train and commit twice
	 * (pinned, active and new slot), then the session reboots */
	const span_t pin = slot_span(&s1);
	const fz_info_t info = fz_info(&H);
	fz_stats_t last = s1;
	for (int c = 0; c < 2; c++) {
		train(&info, 2 * c);
		train(&info, 2 * c + 1);
		commit(&pin, &last);
	}
	reboot_finds(&last, "the last write");
	return 0;
}
