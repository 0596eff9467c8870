/* Top-r SGD update, float32 (Kwon & Park): of a layer's updates lr * g only
 * the k largest in magnitude are applied. The threshold is the k-th largest
 * |update| found by a radix select over the IEEE bit patterns of |update|
 * (ordered like the values for non-negative floats): four 256-bin histogram
 * passes, no sort, no copy. Ties at the threshold go to the lower index. */
#include <stddef.h>
#include <string.h>

#include "kilolearn/kl_kernels.h"

static inline float topr_delta(const float *gw, const float *dy, const float *x, float lr, int i,
			       int j, int cols)
{
	return gw != NULL ? lr * gw[(long)i * cols + j] : lr * (dy[i] * x[j]);
}

static inline uint32_t topr_key(float delta)
{
	uint32_t u;
	memcpy(&u, &delta, sizeof(u));
	return u & 0x7FFFFFFFu; /* |delta| */
}

uint32_t kl_topr_sgd_weights_f32(float *w, const float *gw, const float *dy, const float *x,
				 int rows, int cols, float lr, uint32_t k_sel, uint32_t *hist)
{
	const uint32_t n = (uint32_t)rows * (uint32_t)cols;
	if (k_sel == 0u) {
		return 0;
	}
	uint32_t prefix = 0, mask = 0, need = k_sel < n ? k_sel : n;
	for (int shift = 24; shift >= 0 && need > 0u; shift -= 8) {
		for (int v = 0; v < 256; v++) {
			hist[v] = 0;
		}
		for (int i = 0; i < rows; i++) {
			for (int j = 0; j < cols; j++) {
				const uint32_t key = topr_key(topr_delta(gw, dy, x, lr, i, j, cols));
				if ((key & mask) == prefix) {
					hist[(key >> shift) & 255u]++;
				}
			}
		}
		int b = 255;
		while (b > 0 && hist[b] < need) {
			need -= hist[b--];
		}
		prefix |= (uint32_t)b << shift;
		mask |= 255u << shift;
	}
	/* threshold key `prefix`; `need` of the keys equal to it are taken */
	uint32_t applied = 0;
	for (int i = 0; i < rows; i++) {
		float *row = w + (long)i * cols;
		for (int j = 0; j < cols; j++) {
			const float delta = topr_delta(gw, dy, x, lr, i, j, cols);
			const uint32_t key = topr_key(delta);
			if (key == 0u || key < prefix) {
				continue;
			}
			if (key == prefix) {
				if (need == 0u) {
					continue;
				}
				need--;
			}
			row[j] -= delta;
			applied++;
		}
	}
	return applied;
}
