/*
 * A synthetic int8 784-512-128-10 MLP as a kilolearn blob (docs/blob-format.md), written on
 * the device, and synthetic 784-pixel samples: 10 class prototypes plus noise. Everything
 * comes from xorshift32, so two calls with the same seed give the same bytes.
 */
#ifndef MLP_BLOB_H
#define MLP_BLOB_H

#include <stdint.h>

#define MLP_N_IN    784u
#define MLP_N_OUT   10u
#define MLP_N_OPS   3u
#define MLP_PARAMS  (784u * 512u + 512u + 512u * 128u + 128u + 128u * 10u + 10u)

/* bytes of the blob (4-aligned): tables and softmax table 752, weights and biases */
#define MLP_BLOB_BYTES (752u + 784u * 512u + 4u * 512u + 512u * 128u + 4u * 128u + \
			128u * 10u + 4u * 10u)
/* the same, computed from the layout */
uint32_t mlp_blob_size(void);

/* Write the blob into buf (mlp_blob_size() bytes, 4-aligned): its weights drawn from seed,
 * biases 0, channel-norm updates of permille rows (format 2.2). paged: every dense op
 * KL_OP_PAGED (format 2.4). */
void mlp_blob_write(uint8_t *buf, int paged, uint32_t seed, uint32_t permille);

/* offsets of op i's weights and biases in the blob */
uint32_t mlp_w_off(uint32_t i);
uint32_t mlp_b_off(uint32_t i);
/* its input and output sizes */
uint32_t mlp_n_in(uint32_t i);
uint32_t mlp_n_out(uint32_t i);

/* Sample i (784 int8 pixels, scale 2^-8, zero point -128) and its label. */
void mlp_sample(uint32_t i, int8_t *x, int *label);

#endif /* MLP_BLOB_H */
