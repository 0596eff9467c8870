/* Little-endian field readers and writers: the blob parser, the model loader,
 * the session's frames (and the fuzz harnesses, tests/fuzz). */
#ifndef KL_BLOB_READ_H
#define KL_BLOB_READ_H

#include <stdint.h>

static inline uint16_t kl_rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static inline uint32_t kl_rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static inline void kl_wr16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static inline void kl_wr32(uint8_t *p, uint32_t v)
{
	kl_wr16(p, v);
	kl_wr16(p + 2, v >> 16);
}

#endif
