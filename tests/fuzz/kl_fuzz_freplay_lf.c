/*
 * libFuzzer target: latent replay in flash (kl_freplay.h, docs/replay.md) on
 * crafted flash. The region is built from the input: latents offered through
 * the engine's own writer (buffers of several shapes and epochs, so that
 * records of other buffers lie around), records broken afterwards (a byte of
 * the header or payload), raw bytes, erased sectors, power cuts at a step.
 * Then the region is mounted (kl_freplay_init resuming), and:
 *   - the buffer is consistent: latents held <= capacity, per-class counts
 *     from the labels, every held latent readable, labels in range, offered
 *     >= held per class; the cells the next record goes to are erased;
 *   - offers go on without a store error (NOR rules kept: nothing is
 *     programmed over cells that are not erased), and a mount right after
 *     the last kept one sees exactly that state: latents, labels, counts,
 *     generator (what a write commits is what the next boot finds).
 *
 * Input: byte 0 geometry (GEOMS), byte 1 shape (SHAPES), then ops, op % 6:
 *   0 OFFER   label u8, latent seed u8: offer a latent to the buffer
 *   1 BREAK   record u16, byte u8, bits u8: flip bits of a record in place
 *   2 BYTES   offset u16, n u8, n bytes
 *   3 ERASE   sector u8
 *   4 SHAPE   shape u8, resume u8: a buffer of another shape (or this one) on the region
 *   5 CUT     step u8, seed u8: power lost at that step of what follows, then a reboot
 */
#include "kl_fuzz_lf.h"
#include "kilolearn/kl_freplay.h"

static const kl_store_geom_t GEOMS[4] = {
	{8u * 1024u, 1024u, 16u, 0xFFu},
	{6u * 1024u, 512u, 4u, 0x00u},
	{16u * 1024u, 2048u, 64u, 0xFFu},
	{12u * 1024u, 1024u, 256u, 0x00u},
};
static const struct {
	uint32_t cap, elem;
	uint16_t classes;
} SHAPES[4] = {{12u, 20u, 4u}, {5u, 33u, 3u}, {20u, 8u, 6u}, {1u, 100u, 2u}};
#define MEM_MAX (16u * 1024u)

static uint64_t mem[MEM_MAX / 8u];
static uint64_t arena_mem[8u * 1024u / 8u];
static kl_store_t st;
static kl_nor_sim_t sim;
static kl_arena_t arena;
static kl_freplay_t fr;
static const kl_store_geom_t *geom;
static uint32_t shape;

/* (re)boot on the region: the buffer of shape s mounted */
static int boot(uint32_t s, int resume, uint32_t cut, uint32_t seed)
{
	FZ_CHECK(kl_store_nor_init(&st, &sim, (uint8_t *)mem, geom) == KL_OK, "nor");
	kl_store_nor_cut(&st, cut, seed);
	kl_arena_init(&arena, arena_mem, sizeof(arena_mem));
	shape = s;
	return kl_freplay_init(&fr, &arena, &st, SHAPES[s].cap, SHAPES[s].elem, SHAPES[s].classes,
			       2u, 5u, resume);
}

static void check_consistent(void)
{
	const kl_replay_t *r = &fr.r;
	FZ_CHECK(r->count <= r->cap, "count %u > cap", (unsigned)r->count);
	uint32_t stored[8] = {0};
	for (uint32_t s = 0; s < r->count; s++) {
		FZ_CHECK(r->labels[s] < r->n_classes, "label");
		stored[r->labels[s]]++;
		FZ_CHECK(kl_freplay_latent(&fr, (int)s) != NULL, "latent %u unreadable", (unsigned)s);
	}
	for (uint32_t c = 0; c < r->n_classes; c++) {
		FZ_CHECK(stored[c] == r->stored[c] && r->seen[c] >= r->stored[c], "class %u", (unsigned)c);
	}
	if (fr.fill < fr.per_sec) {
		const uint8_t *p = (const uint8_t *)mem + fr.head * geom->erase_block + fr.fill * fr.span;
		for (uint32_t i = 0; i < fr.span; i++) {
			FZ_CHECK(p[i] == geom->erase_value, "the write position is not erased");
		}
	}
}

static uint32_t state_crc(void)
{
	const kl_replay_t *r = &fr.r;
	uint8_t b[12];
	kl_wr32(b, r->count);
	kl_wr32(b + 4, r->rng);
	kl_wr32(b + 8, r->cap);
	uint32_t c = kl_crc32(0, b, sizeof(b));
	c = kl_crc32(c, (const uint8_t *)r->seen, 4u * r->n_classes);
	c = kl_crc32(c, (const uint8_t *)r->labels, 2u * r->count);
	for (uint32_t s = 0; s < r->count; s++) {
		const void *x = kl_freplay_latent(&fr, (int)s);
		FZ_CHECK(x != NULL, "latent");
		c = kl_crc32(c, x, r->elem);
	}
	return c;
}

static int offer(uint8_t label, uint8_t seed)
{
	uint8_t x[128];
	uint32_t s = seed * 0x9E3779B1u + 1u;
	for (uint32_t i = 0; i < SHAPES[shape].elem; i++) {
		x[i] = (uint8_t)kl_xorshift32(&s);
	}
	return kl_freplay_add(&fr, x, label % SHAPES[shape].classes);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_in_t in = {data, size, 0};
	geom = &GEOMS[fz_u8(&in) % 4u];
	memset(mem, geom->erase_value, geom->size);
	uint32_t s = fz_u8(&in) % 4u;
	int alive = boot(s, 0, 0, 0) == KL_OK;
	for (int n = 0; n < 96 && fz_left(&in) > 0u; n++) {
		switch (fz_u8(&in) % 6u) {
		case 0: {
			const uint8_t label = fz_u8(&in), seed = fz_u8(&in);
			if (alive) {
				alive = offer(label, seed) >= -1;
			}
			break;
		}
		case 1: {
			if (fr.per_sec == 0u) {
				break;
			}
			const uint32_t rec = fz_u16(&in) % (fr.per_sec * fr.n_sec + 1u);
			const uint32_t at = fz_u8(&in), bits = fz_u8(&in);
			const uint32_t off = rec / fr.per_sec * geom->erase_block +
					     rec % fr.per_sec * fr.span + at % fr.span;
			if (off < geom->size) {
				((uint8_t *)mem)[off] ^= (uint8_t)(bits | 1u);
			}
			break;
		}
		case 2: {
			const uint32_t off = fz_u16(&in) % geom->size;
			size_t got = 0;
			const uint8_t *p = fz_take(&in, fz_u8(&in), &got);
			const uint32_t k = (uint32_t)(got < geom->size - off ? got : geom->size - off);
			memcpy((uint8_t *)mem + off, p, k);
			break;
		}
		case 3:
			memset((uint8_t *)mem + (fz_u8(&in) % (geom->size / geom->erase_block)) *
						      geom->erase_block,
			       geom->erase_value, geom->erase_block);
			break;
		case 4: {
			const uint8_t ns = fz_u8(&in), resume = fz_u8(&in);
			s = ns % 4u;
			alive = boot(s, resume & 1u, 0, 0) == KL_OK;
			break;
		}
		default: {
			const uint8_t step = fz_u8(&in), seed = fz_u8(&in);
			alive = boot(s, 1, 1u + step % 64u, seed) == KL_OK;
			for (int k = 0; alive && k < 8; k++) {
				alive = offer((uint8_t)k, (uint8_t)(seed + k)) >= -1;
			}
			alive = boot(s, 1, 0, 0) == KL_OK;
			break;
		}
		}
	}
	/* a boot on whatever the region holds */
	const int err = boot(s, 1, 0, 0);
	if (err != KL_OK) {
		/* a region too small for the shape, or sequence numbers that cannot grow */
		FZ_CHECK(err == KL_ENOSPC, "init: %d", err);
		return 0;
	}
	check_consistent();
	uint32_t crc = 0;
	int kept = 0;
	for (uint32_t k = 0; k < 24u; k++) {
		const uint32_t pre = state_crc(), records = fr.records;
		const int r = offer((uint8_t)(k * 7u), (uint8_t)k);
		if (r == KL_ENOSPC && fr.seq == UINT64_MAX) {
			return 0; /* a crafted sequence number that cannot grow */
		}
		FZ_CHECK(r >= -1, "offer %u: %d", (unsigned)k, r);
		FZ_CHECK(sim.violations == 0u, "programmed cells that were not erased");
		if (fr.records != records) { /* the newest record: this offer's, or a reclaim's
					      * copy before it (the state before the offer) */
			crc = r >= 0 ? state_crc() : pre;
			kept = 1;
		}
	}
	if (kept) {
		/* the reboot sees the state of the newest record */
		FZ_CHECK(boot(s, 1, 0, 0) == KL_OK, "reboot");
		check_consistent();
		FZ_CHECK(state_crc() == crc, "the last committed state did not come back");
	}
	return 0;
}
