/*
 * Blob parser fuzzer (host, meant for the ASan/UBSan build): mutates a valid
 * blob in many ways (the schedule section of a 2.1 blob among them, the split
 * fields of a 2.7 one), re-seals the CRC half of the time so the structural
 * checks behind it are reached, and loads each mutant. A mutant must either
 * be rejected with a KL_E* code or load and then train and predict without
 * any out-of-bounds access (the sanitizers turn one into a crash). Half of
 * the loads get a second memory region (kl_arena_set_far) of its own
 * allocation, sized as the blob's split boundary or at random.
 *
 * usage: kl_fuzz_blob BLOB ITERATIONS SEED
 * prints: "fuzz <n> accepted <a> rejected <r> codes <c1>:<n1> ..." and exits 0.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kilolearn/kilolearn.h"
#include "../fuzz/kl_fuzz_paged.h"

static uint32_t rng_state;

static uint32_t rnd(void)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 17;
	rng_state ^= rng_state << 5;
	return rng_state;
}

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static uint32_t arena_mem[1 << 16];
static int8_t xin[4 * 65536];

int main(int argc, char **argv)
{
	if (argc != 4) {
		fprintf(stderr, "usage: %s BLOB ITERATIONS SEED\n", argv[0]);
		return 2;
	}
	FILE *f = fopen(argv[1], "rb");
	if (f == NULL) {
		perror(argv[1]);
		return 2;
	}
	static uint8_t orig[1 << 20];
	const size_t n = fread(orig, 1, sizeof(orig), f);
	fclose(f);
	const long iters = atol(argv[2]);
	rng_state = (uint32_t)atol(argv[3]) | 1u;
	uint32_t *mut = malloc(n + 4u);
	if (mut == NULL) {
		return 2;
	}
	uint8_t *b = (uint8_t *)mut;
	long accepted = 0, rejected = 0;
	long codes[8] = {0};
	const int code_ids[8] = {KL_ENOMEM, KL_EINVAL,  KL_EBADMAGIC, KL_EVERSION,
				 KL_ETRUNC, KL_ECRC,    KL_ECORRUPT,  KL_ENOTSUP};
	for (long it = 0; it < iters; it++) {
		memcpy(b, orig, n);
		size_t len = n;
		const uint32_t sched = n >= KL_BLOB_HEADER_SIZE ? kl_blob_schedule(b) : 0u;
		const int has_sched = sched != 0u && sched < n;
		/* 2.7: the header's split fields (boundary, the second part's bytes) */
		const uint32_t minor = (uint32_t)b[KL_BH_VER_MINOR] |
				       ((uint32_t)b[KL_BH_VER_MINOR + 1] << 8);
		const int has_split = has_sched && minor >= 7u &&
				      (size_t)sched + KL_SCHED_HEADER_SIZE_SPLIT <= n;
		const uint32_t kind = rnd() % (has_split ? 8u : has_sched ? 7u : 6u);
		const int reseal = (rnd() & 1u) != 0u;
		if (kind == 0) { /* truncate */
			len = rnd() % n;
		} else if (kind == 1) { /* flip bits */
			for (uint32_t k = 0, m = 1u + rnd() % 4u; k < m; k++) {
				b[rnd() % n] ^= (uint8_t)(1u << (rnd() % 8u));
			}
		} else if (kind == 2) { /* random byte in the header or layer table */
			b[rnd() % (n < 256u ? n : 256u)] = (uint8_t)rnd();
		} else if (kind == 3) { /* random 32-bit word at an aligned header/table spot */
			put32(b + 4u * (rnd() % 64u), rnd() % 2u ? rnd() : rnd() % 4096u);
		} else if (kind == 4) { /* wrong version */
			b[4] = (uint8_t)(1u + rnd() % 255u);
		} else if (kind == 6) { /* a step of the schedule (format 2.1) */
			const size_t at = sched + rnd() % (n - sched);
			b[at] = (uint8_t)(rnd() % 3u == 0u ? rnd() : b[at] ^ (1u << (rnd() % 8u)));
		} else if (kind == 7) { /* the split boundary and the second part's size */
			uint8_t *h = b + sched;
			const uint32_t region = rd32(h + KL_SCHED_REGION);
			const uint32_t split = rd32(h + KL_SCHED_SPLIT);
			const uint32_t pick[8] = {0u,	       region,	   region + 8u, split + 8u,
						  split - 8u, split + 4u, rnd(),       rnd() % (region + 1u)};
			const uint32_t ns = pick[rnd() % 8u];
			put32(h + KL_SCHED_SPLIT, rnd() % 4u == 0u ? ns & ~7u : ns);
			const uint32_t rest = rnd() % 4u;
			if (rest != 0u) { /* else: the old second part's size */
				put32(h + KL_SCHED_SPLIT_REST, rest == 1u ? region - ns
							       : rest == 2u ? 0u
									    : rnd());
			}
		} else if (kind == 5) { /* 16-bit field set to an extreme */
			const size_t at = 16u + 2u * (rnd() % 40u);
			b[at] = (uint8_t)(rnd() % 2u ? 0xFFu : 0u);
			b[at + 1] = (uint8_t)(rnd() % 2u ? 0xFFu : 0u);
		}
		if (reseal && len >= KL_BLOB_HEADER_SIZE) {
			uint32_t total = (uint32_t)b[8] | ((uint32_t)b[9] << 8) |
					 ((uint32_t)b[10] << 16) | ((uint32_t)b[11] << 24);
			if (total >= KL_BLOB_CRC_START && total <= len) {
				put32(b + 12, kl_crc32(0, b + KL_BLOB_CRC_START,
						       total - KL_BLOB_CRC_START));
			}
		}
		kl_arena_t arena;
		kl_arena_init(&arena, arena_mem, sizeof(arena_mem));
		/* a second memory region, exactly as big as asked for (ASan sees past it) */
		kl_arena_t far;
		uint8_t *far_mem = NULL;
		if ((rnd() & 1u) != 0u) {
			uint32_t fs = 1u + rnd() % 65536u;
			if (has_split && rnd() % 4u != 0u) {
				fs = rd32(b + sched + KL_SCHED_SPLIT);
			}
			fs = fs == 0u || fs > (1u << 20) ? 8u : fs;
			far_mem = malloc(fs);
			if (far_mem == NULL) {
				return 2;
			}
			kl_arena_init(&far, far_mem, fs);
			kl_arena_set_far(&arena, &far);
		}
		kl_model_t m;
		const kl_train_cfg_t cfg = {.lr = 0.05f, .momentum = 0.0f, .seed = 1u, .flags = 0u};
		int err = kl_model_init(&m, b, len, &arena, &cfg);
		if (err == KL_OK && m.paged) { /* its rows go to a weight log: a RAM one */
			err = fz_attach_paged(&m, b, &arena, arena_mem, sizeof(arena_mem), &cfg);
		}
		if (err == KL_OK) {
			accepted++;
			/* inputs sized for the model: bytes for s8, floats (zero) for f32 */
			const size_t need = (size_t)m.n_inputs * (m.dtype == KL_DTYPE_S8 ? 1u : 4u);
			if (need > sizeof(xin)) {
				fprintf(stderr, "accepted a model wider than the fuzzer's input\n");
				return 1;
			}
			for (size_t k = 0; k < need; k++) {
				xin[k] = m.dtype == KL_DTYPE_S8 ? (int8_t)rnd() : 0;
			}
			const int r = kl_train_step(&m, xin, (int)(rnd() % m.n_classes));
			if (r < 0 || r >= m.n_classes || kl_predict(&m, xin) < 0) {
				fprintf(stderr, "accepted blob failed to run: %d\n", r);
				return 1;
			}
		} else {
			rejected++;
			int known = 0;
			for (int k = 0; k < 8; k++) {
				if (err == code_ids[k]) {
					codes[k]++;
					known = 1;
				}
			}
			if (!known) {
				fprintf(stderr, "unknown error code %d\n", err);
				return 1;
			}
		}
		free(far_mem);
	}
	printf("fuzz %ld accepted %ld rejected %ld codes", iters, accepted, rejected);
	for (int k = 0; k < 8; k++) {
		printf(" %d:%ld", code_ids[k], codes[k]);
	}
	printf("\n");
	free(mut);
	return 0;
}
