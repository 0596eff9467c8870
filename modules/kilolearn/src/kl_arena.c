/* The one memory arena: a bump allocator over caller-provided memory. */
#include <stdint.h>

#include "kilolearn/kilolearn.h"

void kl_arena_init(kl_arena_t *a, void *mem, size_t size)
{
	a->base = (uint8_t *)mem;
	a->size = size;
	a->used = 0;
	a->peak = 0;
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
}
