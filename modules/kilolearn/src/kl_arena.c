/* The memory arena: a bump allocator over caller-provided memory, with an
 * optional second region (a board's second RAM) for the schedule's region. */
#include <stdint.h>

#include "kilolearn/kilolearn.h"

void kl_arena_init(kl_arena_t *a, void *mem, size_t size)
{
	a->base = (uint8_t *)mem;
	a->size = size;
	a->used = 0;
	a->peak = 0;
	a->far = NULL;
	a->far_mark = 0;
}

void *kl_arena_alloc(kl_arena_t *a, size_t size, size_t align)
{
	const uintptr_t base = (uintptr_t)a->base;
	uintptr_t p = base + a->used;
	p = (p + (align - 1u)) & ~(uintptr_t)(align - 1u);
	const size_t off = (size_t)(p - base);
	if (off > a->size || size > a->size - off) {
		return NULL;
	}
	a->used = off + size;
	if (a->used > a->peak) {
		a->peak = a->used;
	}
	return (void *)p;
}

void kl_arena_reset(kl_arena_t *a, size_t mark)
{
	if (mark <= a->used) {
		a->used = mark;
	}
	if (a->far != NULL && a->far->used != 0u && mark <= a->far_mark) {
		kl_arena_reset(a->far, 0);
	}
}

void kl_arena_set_far(kl_arena_t *a, kl_arena_t *far)
{
	a->far = far != a ? far : NULL;
	a->far_mark = a->used;
}

void *kl_arena_alloc_far(kl_arena_t *a, size_t size, size_t align)
{
	if (a->far == NULL) {
		return kl_arena_alloc(a, size, align);
	}
	if (a->far->used == 0u) {
		a->far_mark = a->used;
	}
	return kl_arena_alloc(a->far, size, align);
}
