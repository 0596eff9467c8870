/* The paired dense weight layout (docs/kernels.md, "Paired dense layout"):
 * the dsp backend keeps a trained int8 dense layer's rows 2p and 2p + 1
 * byte-interleaved, the first row's sign bit flipped, so that one SMLAD on a
 * raw weight word and one on the word masked with 0xFF00FF00 give both
 * rows' sums (kl_dsp_fully_connected_paired_s8). Portable C: the engine
 * converts with these at load time and on read-back, on every core. */
#include "kilolearn/kl_kernels.h"

uint32_t kl_fc_paired_offset(uint32_t i, uint32_t j, uint32_t n_in, uint32_t n_out)
{
	if (i >= (n_out & ~1u)) { /* the odd last row stays plain */
		return i * n_in + j;
	}
	const uint32_t k = j & 3u, p = i >> 1, g = j >> 2;
	const uint32_t inner = 4u * (k & 1u) + 2u * (k >> 1) + (i & 1u);
	const uint32_t nt = kl_fc_triples((int)n_in) ? (n_out >> 1) / 3u : 0u;
	if (p < 3u * nt) {
		return (p / 3u) * 6u * n_in + 24u * g + 8u * (p % 3u) + inner;
	}
	return p * 2u * n_in + 8u * g + inner;
}

void kl_fc_pair_s8(const int8_t *w, int8_t *out, int n_in, int n_out)
{
	const uint32_t ni = (uint32_t)n_in, no = (uint32_t)n_out;
	for (uint32_t i = 0; i < no; i++) {
		const uint8_t flip = (i & 1u) == 0u && i < (no & ~1u) ? 0x80u : 0u;
		for (uint32_t j = 0; j < ni; j++) {
			out[kl_fc_paired_offset(i, j, ni, no)] =
				(int8_t)((uint8_t)w[i * ni + j] ^ flip);
		}
	}
}

void kl_fc_unpair_s8(const int8_t *p, int8_t *out, int n_in, int n_out)
{
	const uint32_t ni = (uint32_t)n_in, no = (uint32_t)n_out;
	for (uint32_t i = 0; i < no; i++) {
		const uint8_t flip = (i & 1u) == 0u && i < (no & ~1u) ? 0x80u : 0u;
		for (uint32_t j = 0; j < ni; j++) {
			out[i * ni + j] = (int8_t)((uint8_t)p[kl_fc_paired_offset(i, j, ni, no)] ^ flip);
		}
	}
}

int8_t kl_fc_paired_get(const int8_t *p, uint32_t i, uint32_t j, uint32_t n_in, uint32_t n_out)
{
	const uint8_t flip = (i & 1u) == 0u && i < (n_out & ~1u) ? 0x80u : 0u;
	return (int8_t)((uint8_t)p[kl_fc_paired_offset(i, j, n_in, n_out)] ^ flip);
}
