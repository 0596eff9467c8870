/*
 * kl_freplay_faults: power cuts at every program/erase step of latent replay
 * in flash (kl_freplay.h, docs/replay.md), against kl_replay in memory as
 * the reference (the C twin of the numpy ReplayBuffer).
 *
 * A run of offers and picks (classes arriving in tasks, latents from a
 * generator) on a small NOR-simulated region, so that the log comes round
 * many times and reclaims copy live records. Without cuts, after every offer
 * and pick the flash buffer equals the reference (latents held, labels,
 * every latent's bytes, per-class counts, generator); each record's state is
 * the reference's after the offer or pick it belongs to (noted with the step
 * that commits it: its header's CRC block). Then for every step k of that
 * run, a fresh region, the same run with power lost at step k (clean or torn,
 * in turn), a reboot (kl_freplay_init resuming), and the buffer must be
 * exactly the reference's state of the last record committed before step k:
 * no committed latent lost, no torn one taken. The reservoir then goes on
 * for a few more offers and picks, which must match the reference's.
 *
 *   host:  kl_freplay_faults [OFFERS]
 *   board: no arguments (the region in PSRAM)
 * Prints the counts and "PASS" / "FAIL ..."; exits 0 on PASS.
 */
#include <stdlib.h>
#include <string.h>

#include "kilolearn/kl_freplay.h"
#include "kl_port.h"
#include "kl_test_say.h"

#define CAP      24u
#define ELEM     21u
#define CLASSES  6u
#define TASKS    3u
#define LINES    3u
#define SEED     77u
#define PICKS    2u
#define MAX_OPS  (3u * 400u)
#define MAX_RECS 4096u
#define CONT     9u /* offers and picks after a reboot */

static const kl_store_geom_t GEOMS[3] = {
	{10u * 512u, 512u, 16u, 0xFFu},    /* 5 records a sector: reclaims all the time */
	{24u * 256u, 256u, 4u, 0x00u},     /* 2 a sector, erased to 0, CRC not in the last block */
	{10u * 1024u, 1024u, 64u, 0xFFu},  /* a header of one write block */
};

static kl_store_t st;
static kl_nor_sim_t sim;
static uint8_t *mem;
static kl_freplay_t fr;
static kl_replay_t ref;
static kl_arena_t arena, ref_arena;
static uint64_t arena_mem[4096u], ref_mem[4096u];
static uint32_t n_offers = 120u, n_ops;
static uint32_t part_crc[MAX_OPS + 1u], full_crc[MAX_OPS + 1u];
static uint32_t commit_step[MAX_RECS], commit_state[MAX_RECS], n_commits;
static uint32_t cur_op, base_steps, hdr_span, span, bad_state;
static int recording;

/* op u (1-based): offer (u - 1) / (1 + PICKS) when (u - 1) % (1 + PICKS) == 0, else a pick */
static int is_offer(uint32_t u, uint32_t *a)
{
	*a = (u - 1u) / (1u + PICKS);
	return (u - 1u) % (1u + PICKS) == 0u;
}

static uint32_t mix(uint32_t x)
{
	x = x * 0x9E3779B1u + 0x7F4A7C15u;
	return kl_xorshift32(&x);
}

static int label_of(uint32_t a)
{
	return (int)(2u * (a * TASKS / n_offers) + (mix(a) & 1u));
}

static void latent_of(uint32_t a, uint8_t *x)
{
	uint32_t s = mix(a + 1000u) | 1u;
	for (uint32_t i = 0; i < ELEM; i++) {
		x[i] = (uint8_t)kl_xorshift32(&s);
	}
}

static uint32_t crc_u32(uint32_t crc, uint32_t v)
{
	uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
	return kl_crc32(crc, b, 4u);
}

/* the state a record carries: latents held, generator, per-class counts */
static uint32_t part_of(uint32_t count, uint32_t rng, const uint32_t *seen)
{
	uint32_t c = crc_u32(crc_u32(0, count), rng);
	for (uint32_t k = 0; k < CLASSES; k++) {
		c = crc_u32(c, seen[k]);
	}
	return c;
}

/* ... and every slot's label and latent */
static uint32_t full_of(const kl_replay_t *r, kl_freplay_t *f)
{
	uint32_t c = part_of(r->count, r->rng, r->seen);
	for (uint32_t s = 0; s < r->count; s++) {
		c = crc_u32(c, r->labels[s]);
		const void *x = f != NULL ? kl_freplay_latent(f, (int)s)
					  : (const void *)(r->data + (size_t)s * r->stride);
		if (x == NULL) {
			return 0;
		}
		c = kl_crc32(c, x, ELEM);
	}
	return c;
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* every step that reached the cells: a record header's program commits the
 * record at the step of its CRC's write block; its state must be the
 * reference's before or after the op being run */
static void on_change(void *ctx, uint32_t off, uint32_t n)
{
	(void)ctx;
	const uint32_t eb = st.geom.erase_block, wb = st.geom.write_block;
	if (!recording || n == eb || (off % eb) % span != 0u || n != hdr_span) {
		return;
	}
	const uint8_t *h = mem + off;
	uint32_t seen[CLASSES];
	for (uint32_t k = 0; k < CLASSES; k++) {
		seen[k] = rd32(h + hdr_span + 4u * k);
	}
	const uint32_t p = part_of((uint32_t)h[30] | (uint32_t)h[31] << 8, rd32(h + 20), seen);
	uint32_t u = cur_op;
	if (p != part_crc[u]) {
		u = cur_op - 1u; /* a reclaim's copy before an offer: the state before it */
		if (cur_op == 0u || p != part_crc[u]) {
			bad_state++;
			return;
		}
	}
	if (n_commits < MAX_RECS) {
		const uint32_t after_crc = (hdr_span - (44u + wb - 1u) / wb * wb) / wb;
		commit_step[n_commits] = kl_store_nor_steps(&st) - base_steps - after_crc;
		commit_state[n_commits++] = u;
	}
}

/* the region (fresh: erased; else a reboot over what it holds), power lost
 * at its cut-th step from now (0: never), the buffer initialised on it */
static int region(const kl_store_geom_t *g, int fresh, uint32_t cut, uint32_t seed)
{
	int err = kl_store_nor_init(&st, &sim, mem, g);
	if (err != KL_OK) {
		return err;
	}
	if (fresh) {
		kl_store_nor_format(&st);
	}
	sim.on_change = on_change;
	kl_store_nor_cut(&st, cut, seed);
	kl_arena_init(&arena, arena_mem, sizeof(arena_mem));
	return kl_freplay_init(&fr, &arena, &st, CAP, ELEM, CLASSES, LINES, SEED, !fresh);
}

/* op u on the flash buffer; the reference's result given: the slot of the
 * offer or the pick (and for a pick, its latent must be the reference's) */
static int lockstep; /* the reference is at op u too: a pick's latent is compared */

static int run_op(uint32_t u, int want_slot)
{
	uint32_t a;
	uint8_t x[ELEM];
	if (is_offer(u, &a)) {
		latent_of(a, x);
		const int s = kl_freplay_add(&fr, x, label_of(a));
		return s < -1 ? s : (s == want_slot ? KL_OK : KL_ECORRUPT);
	}
	const int s = kl_freplay_pick(&fr);
	if (s != want_slot) {
		return KL_ECORRUPT;
	}
	if (s >= 0 && lockstep) {
		const void *p = kl_freplay_latent(&fr, s);
		if (p == NULL || memcmp(p, ref.data + (size_t)s * ref.stride, ELEM) != 0 ||
		    kl_freplay_label(&fr, s) != ref.labels[s]) {
			return KL_ECORRUPT;
		}
	}
	return KL_OK;
}

static int slots_of[MAX_OPS + 1u];

static int check_geometry(const kl_store_geom_t *g, uint32_t *cuts)
{
	n_ops = n_offers * (1u + PICKS);
	span = kl_freplay_span(g, ELEM, CLASSES);
	const uint32_t unit = g->write_block < 8u ? 8u : g->write_block;
	hdr_span = (44u + unit - 1u) / unit * unit;
	/* the reference and the run without cuts */
	kl_arena_init(&ref_arena, ref_mem, sizeof(ref_mem));
	if (kl_replay_init(&ref, &ref_arena, CAP, ELEM, CLASSES, SEED) != KL_OK) {
		say("FAIL reference\n");
		return 1;
	}
	n_commits = bad_state = 0;
	cur_op = 0;
	part_crc[0] = part_of(ref.count, ref.rng, ref.seen);
	full_crc[0] = full_of(&ref, NULL);
	recording = 1;
	base_steps = 0;
	lockstep = 1;
	int err = region(g, 1, 0, 0);
	if (err != KL_OK) {
		say("FAIL init %s\n", kl_strerror(err));
		return 1;
	}
	for (uint32_t u = 1; u <= n_ops; u++) {
		uint32_t a;
		uint8_t x[ELEM];
		if (is_offer(u, &a)) {
			latent_of(a, x);
			slots_of[u] = kl_replay_add(&ref, x, label_of(a));
		} else {
			slots_of[u] = kl_replay_pick(&ref);
		}
		part_crc[u] = part_of(ref.count, ref.rng, ref.seen);
		full_crc[u] = full_of(&ref, NULL);
		cur_op = u;
		err = run_op(u, slots_of[u]);
		if (err != KL_OK || full_of(&fr.r, &fr) != full_crc[u]) {
			say("FAIL op %u without cuts: %s\n", (unsigned)u,
			    err != KL_OK ? kl_strerror(err) : "the buffer differs from the reference");
			return 1;
		}
	}
	recording = 0;
	lockstep = 0;
	const uint32_t total = kl_store_nor_steps(&st);
	say("geometry %u,%u,%u,0x%02X: %u offers, %u picks, records of %u B (%u a sector), "
	    "%u records (%u reclaim copies), %u program/erase steps, %u B programmed, %u erases\n",
	    (unsigned)g->size, (unsigned)g->erase_block, (unsigned)g->write_block,
	    (unsigned)g->erase_value, (unsigned)n_offers, (unsigned)(n_ops - n_offers),
	    (unsigned)span, (unsigned)fr.per_sec, (unsigned)fr.records, (unsigned)fr.copies,
	    (unsigned)total, (unsigned)st.bytes_written, (unsigned)st.erases);
	if (bad_state != 0u || n_commits == 0u || n_commits >= MAX_RECS) {
		say("FAIL %u records carry a state that is not the reference's (%u noted)\n",
		    (unsigned)bad_state, (unsigned)n_commits);
		return 1;
	}
	/* every step cut, clean and torn in turn */
	uint32_t bad = 0, continued = 0, latents = 0;
	for (uint32_t k = 1; k <= total; k++) {
		uint32_t u = 1;
		if (region(g, 1, k, (k & 1u) ? 0x9E3779B9u * k : 0u) == KL_OK) {
			while (u <= n_ops && run_op(u, slots_of[u]) == KL_OK) {
				u++;
			}
		}
		/* the state of the last record committed before step k */
		uint32_t want = 0;
		for (uint32_t i = 0; i < n_commits && commit_step[i] <= k - 1u; i++) {
			want = commit_state[i];
		}
		err = region(g, 0, 0, 0); /* reboot: mount, resume */
		const uint32_t got = err == KL_OK ? full_of(&fr.r, &fr) : 0u;
		if (err != KL_OK || got != full_crc[want] || fr.mounted != fr.r.count) {
			bad++;
			say("FAIL cut at step %u (op %u): %s\n", (unsigned)k, (unsigned)u,
			    err != KL_OK ? kl_strerror(err) : "not the state of the last record");
			continue;
		}
		latents += fr.r.count;
		/* the next record goes to cells still erased (a torn one is skipped) */
		if (fr.fill < fr.per_sec) {
			const uint8_t *p = mem + fr.head * g->erase_block + fr.fill * span;
			uint32_t i = 0;
			while (i < span && p[i] == g->erase_value) {
				i++;
			}
			if (i != span) {
				bad++;
				say("FAIL cut at step %u: the write position is not erased\n",
				    (unsigned)k);
				continue;
			}
		}
		/* the reference from the same state: it goes on as the run without cuts */
		uint32_t v = want + 1u;
		for (; v <= n_ops && v <= want + CONT; v++) {
			if (run_op(v, slots_of[v]) != KL_OK || full_of(&fr.r, &fr) != full_crc[v]) {
				break;
			}
		}
		if (v <= n_ops && v <= want + CONT) {
			bad++;
			say("FAIL cut at step %u: op %u after the reboot differs from the reference\n",
			    (unsigned)k, (unsigned)v);
			continue;
		}
		if (sim.violations != 0u) {
			bad++;
			say("FAIL cut at step %u: programmed cells that were not erased\n", (unsigned)k);
			continue;
		}
		continued++;
	}
	*cuts += total;
	say("  %u cuts (%u torn): %u restored the last committed state (%u latents checked), "
	    "%u went on as the reference, %u failed\n", (unsigned)total, (unsigned)(total + 1u) / 2u,
	    (unsigned)(total - bad), (unsigned)latents, (unsigned)continued, (unsigned)bad);
	return bad != 0u;
}

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return 2;
	}
#ifndef KL_BAREMETAL
	if (argc > 1) {
		n_offers = (uint32_t)strtoul(argv[1], NULL, 10);
	}
#endif
	if (n_offers < TASKS || n_offers * (1u + PICKS) > MAX_OPS) {
		say("FAIL offers: %u..%u\n", (unsigned)TASKS, (unsigned)(MAX_OPS / (1u + PICKS)));
		return 2;
	}
	size_t len = 0;
	mem = kl_port_flash_sim(&len);
	if (mem == NULL || len < 64u * 1024u) {
		say("FAIL no flash simulation region\n");
		return 2;
	}
	uint32_t cuts = 0;
	int fail = 0;
	for (uint32_t i = 0; i < sizeof(GEOMS) / sizeof(GEOMS[0]); i++) {
		fail |= check_geometry(&GEOMS[i], &cuts);
	}
	say("cut points: %u\n%s\n", (unsigned)cuts, fail ? "FAIL" : "PASS");
	kl_port_exit(fail ? 1 : 0);
	return fail ? 1 : 0;
}
