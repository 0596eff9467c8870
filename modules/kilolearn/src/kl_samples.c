/* Sample buffer: the most recent labelled samples (model inputs) in a ring in
 * the arena, revisited in shuffled epochs, so that a few hundred samples seen
 * once on the wire are trained on for several epochs on the device. The order
 * of an epoch is a Fisher-Yates shuffle driven by the replay buffer's
 * xorshift32 generator; the numpy twin (scripts/kilolearn/core/samples.py)
 * visits the very same order. */
#include <string.h>

#include "kilolearn/kilolearn.h"

static void *alloc_n(kl_arena_t *a, uint32_t n, uint32_t elem)
{
	const uint64_t size = (uint64_t)n * elem;
	if (size > (uint64_t)a->size) { /* a 32-bit size_t must not wrap */
		return NULL;
	}
	return kl_arena_alloc(a, (size_t)(size != 0u ? size : 4u), 4u);
}

int kl_samples_reserve(kl_samples_t *b, kl_arena_t *a, uint32_t cap, uint32_t elem)
{
	if (b == NULL || a == NULL || elem == 0u || cap == 0u || cap > KL_SAMPLES_MAX) {
		return KL_EINVAL;
	}
	memset(b, 0, sizeof(*b));
	b->cap = cap;
	b->elem = elem;
	/* every sample on a 4-byte boundary: a float32 sample is read as floats */
	b->stride = elem > 0xFFFFFFFCu ? 0u : (elem + 3u) & ~3u;
	b->data = b->stride == 0u ? NULL : alloc_n(a, cap, b->stride);
	b->labels = alloc_n(a, cap, 2u);
	b->order = alloc_n(a, cap, 2u);
	if (b->data == NULL || b->labels == NULL || b->order == NULL) {
		return KL_ENOMEM;
	}
	return KL_OK;
}

int kl_samples_init(kl_samples_t *b, kl_arena_t *a, uint32_t cap, uint32_t elem, uint32_t seed)
{
	const int err = kl_samples_reserve(b, a, cap, elem);
	if (err != KL_OK) {
		return err;
	}
	b->rng = seed != 0u ? seed : 0x2545F491u;
	return KL_OK;
}

void kl_samples_add(kl_samples_t *b, const void *x, int label)
{
	uint32_t slot = b->next;
	if (b->count < b->cap) {
		slot = b->count++;
	} else {
		b->next = b->next + 1u == b->cap ? 0u : b->next + 1u; /* the oldest goes */
	}
	memcpy(b->data + (size_t)slot * b->stride, x, b->elem);
	b->labels[slot] = (uint16_t)label;
}

const void *kl_samples_get(const kl_samples_t *b, uint32_t slot, int *label)
{
	*label = b->labels[slot];
	return b->data + (size_t)slot * b->stride;
}

uint32_t kl_samples_shuffle(kl_samples_t *b)
{
	for (uint32_t i = 0; i < b->count; i++) {
		b->order[i] = (uint16_t)i;
	}
	for (uint32_t i = b->count; i > 1u; i--) {
		const uint32_t j = kl_xorshift32(&b->rng) % i;
		const uint16_t t = b->order[i - 1u];
		b->order[i - 1u] = b->order[j];
		b->order[j] = t;
	}
	return b->count;
}

int kl_samples_epoch(kl_samples_t *b, kl_model_t *m, uint32_t *correct)
{
	const uint32_t n = kl_samples_shuffle(b);
	uint32_t ok = 0;
	for (uint32_t k = 0; k < n; k++) {
		int label;
		const void *x = kl_samples_get(b, b->order[k], &label);
		const int pred = kl_train_step(m, x, label);
		if (pred < 0) {
			return pred;
		}
		ok += pred == label;
	}
	if (correct != NULL) {
		*correct = ok;
	}
	return (int)n;
}
