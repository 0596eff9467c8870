/* Latent replay buffer: class-balanced reservoir sampling (Chrysakis & Moens,
 * "Online continual learning from imbalanced data", 2020) with a
 * deterministic xorshift32 generator, so the numpy reference (replay.py)
 * keeps the very same latents. */
#include <string.h>

#include "kilolearn/kilolearn.h"

uint32_t kl_xorshift32(uint32_t *state)
{
	uint32_t x = *state;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	*state = x;
	return x;
}

uint32_t kl_replay_rand(kl_replay_t *r)
{
	return kl_xorshift32(&r->rng);
}

/* n * elem bytes from the arena; 0 on a product past size_t (a 32-bit
 * size_t on Cortex-M: a capacity near 2^32 / elem must not wrap) */
static void *alloc_n(kl_arena_t *a, uint32_t n, uint32_t elem, uint32_t extra)
{
	const uint64_t size = (uint64_t)n * elem + extra;
	if (size > (uint64_t)a->size) {
		return NULL;
	}
	return kl_arena_alloc(a, (size_t)size, 4u);
}

/* the reservoir's allocations: the latents (with_data), labels, per-class counts */
static int reserve(kl_replay_t *r, kl_arena_t *a, uint32_t cap, uint32_t elem, uint16_t n_classes,
		   int with_data)
{
	if (r == NULL || a == NULL || elem == 0u || n_classes == 0u) {
		return KL_EINVAL;
	}
	memset(r, 0, sizeof(*r));
	r->cap = cap;
	r->elem = elem;
	/* every latent on a 4-byte boundary (a float32 latent is read as
	 * floats; an int8 one at the input may reach word loads) */
	r->stride = elem > 0xFFFFFFFCu ? 0u : (elem + 3u) & ~3u;
	r->n_classes = n_classes;
	if (with_data) {
		r->data = r->stride == 0u ? NULL : alloc_n(a, cap, r->stride, 0u);
		if (r->data == NULL) {
			return KL_ENOMEM;
		}
	}
	r->labels = alloc_n(a, cap, 2u, 2u);
	r->stored = alloc_n(a, n_classes, 2u, 0u);
	r->seen = alloc_n(a, n_classes, 4u, 0u);
	if (r->labels == NULL || r->stored == NULL || r->seen == NULL) {
		return KL_ENOMEM;
	}
	return KL_OK;
}

int kl_replay_reserve(kl_replay_t *r, kl_arena_t *a, uint32_t cap, uint32_t elem,
		      uint16_t n_classes)
{
	return reserve(r, a, cap, elem, n_classes, 1);
}

int kl_replay_reserve_meta(kl_replay_t *r, kl_arena_t *a, uint32_t cap, uint32_t elem,
			   uint16_t n_classes)
{
	return reserve(r, a, cap, elem, n_classes, 0);
}

int kl_replay_init(kl_replay_t *r, kl_arena_t *a, uint32_t cap, uint32_t elem,
		   uint16_t n_classes, uint32_t seed)
{
	const int err = kl_replay_reserve(r, a, cap, elem, n_classes);
	if (err != KL_OK) {
		return err;
	}
	r->rng = seed != 0u ? seed : 0x2545F491u;
	kl_replay_clear(r);
	return KL_OK;
}

void kl_replay_clear(kl_replay_t *r)
{
	r->count = 0;
	memset(r->stored, 0, (size_t)r->n_classes * 2u);
	memset(r->seen, 0, (size_t)r->n_classes * 4u);
}

/* the j-th slot holding class c (j < stored[c]) */
static int nth_of_class(const kl_replay_t *r, int c, uint32_t j)
{
	for (uint32_t k = 0; k < r->count; k++) {
		if (r->labels[k] == c && j-- == 0u) {
			return (int)k;
		}
	}
	return -1;
}

int kl_replay_choose(kl_replay_t *r, int label)
{
	if (label < 0 || label >= r->n_classes || r->cap == 0u) {
		return -1;
	}
	r->seen[label]++;
	int slot = -1;
	if (r->count < r->cap) {
		slot = (int)r->count++;
	} else {
		int big = 0;
		for (int c = 1; c < r->n_classes; c++) {
			if (r->stored[c] > r->stored[big]) {
				big = c;
			}
		}
		if (r->stored[label] < r->stored[big]) {
			slot = nth_of_class(r, big, kl_replay_rand(r) % r->stored[big]);
		} else {
			const uint32_t u = kl_replay_rand(r) % r->seen[label];
			if (u < r->stored[label]) {
				slot = nth_of_class(r, label, u);
			}
		}
		if (slot < 0) {
			return -1;
		}
		r->stored[r->labels[slot]]--;
	}
	r->labels[slot] = (uint16_t)label;
	r->stored[label]++;
	return slot;
}

int kl_replay_add(kl_replay_t *r, const void *latent, int label)
{
	const int slot = kl_replay_choose(r, label);
	if (slot >= 0) {
		memcpy(r->data + (size_t)slot * r->stride, latent, r->elem);
	}
	return slot;
}

int kl_replay_pick(kl_replay_t *r)
{
	if (r->count == 0u) {
		return -1;
	}
	return (int)(kl_replay_rand(r) % r->count);
}

const void *kl_replay_latent(const kl_replay_t *r, int slot)
{
	return r->data + (size_t)slot * r->stride;
}
