/* Little-endian field readers for the blob parser and the model loader. */
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

#endif
