/* int8 quantisation helpers shared by the kernels. */
#include <stddef.h>
#include <stdint.h>

#include "kilolearn/kl_kernels.h"

/* the number of significant bits of m > 0 */
static inline int bit_length(uint32_t m)
{
#if defined(__GNUC__)
	return 32 - __builtin_clz(m);
#else
	int l = 0;
	for (; m != 0u; m >>= 1) {
		l++;
	}
	return l;
#endif
}

/* The smallest s with round_half_up(m / 2^s) <= 127. For m > 127 it is s0 =
 * bit_length(m) - 7 (m >> s0 in [64, 127]; any smaller s leaves 128 or more)
 * or s0 + 1 when rounding carries to 128; (m + 2^(s0-1)) >> s0 computed as
 * ((m >> (s0 - 1)) + 1) >> 1, without 64 bits. Checked equal to the loop
 * form (s++ while round(m / 2^s) > 127) for every 32-bit m. */
int kl_grad_shift(uint32_t m)
{
	if (m <= 127u) {
		return 0;
	}
	const int s = bit_length(m) - 7;
	return (((m >> (s - 1)) + 1u) >> 1) <= 127u ? s : s + 1;
}

/* The shift of the largest magnitude (kl_grad_shift). v ^ (v >> 31) is |v|
 * less 1 where v < 0, so the largest of them, m, is the largest magnitude or
 * that less 1: where m and m + 1 give the same shift, that is it; else (m at
 * a boundary) the largest magnitude itself is looked for. */
static int grad_shift(const int32_t *acc, int n)
{
	uint32_t m = 0;
	int i = 0;
	for (; i + 2 <= n; i += 2) {
		const uint32_t a = (uint32_t)(acc[i] ^ (acc[i] >> 31));
		const uint32_t b = (uint32_t)(acc[i + 1] ^ (acc[i + 1] >> 31));
		m = a > m ? a : m;
		m = b > m ? b : m;
	}
	if (i < n) {
		const uint32_t a = (uint32_t)(acc[i] ^ (acc[i] >> 31));
		m = a > m ? a : m;
	}
	const int s = kl_grad_shift(m);
	if (kl_grad_shift(m + 1u) == s) { /* (m <= INT32_MAX) */
		return s;
	}
	m = 0;
	for (i = 0; i < n; i++) {
		const uint32_t v = (uint32_t)acc[i], sg = (uint32_t)(acc[i] >> 31);
		const uint32_t a = (v ^ sg) - sg;
		m = a > m ? a : m;
	}
	return kl_grad_shift(m);
}

/* kl_rshift_round(v, s) (half away from zero) for a shift s in [1, 31] known
 * to the loop as one add: floor((v + h - (v < 0)) / 2^s), h = 2^(s - 1), for
 * v <= INT32_MAX - h (no overflow) */
static inline int32_t rshift_round_pos(int32_t v, int s, int32_t h)
{
	return (v + h + (v >> 31)) >> s;
}

int kl_quantize_grad_s8(const int32_t *acc, int8_t *out, int n)
{
	const int s = grad_shift(acc, n); /* 0..31 */
	const int32_t h = s > 0 ? (int32_t)(1u << (s - 1)) : 0;
	/* every acc <= INT32_MAX - h? Where s <= 24 it is: round(|acc| / 2^s) <=
	 * 127 makes |acc| < 127.5 2^s <= INT32_MAX + 1 - 2^23 */
	int fast = 1;
	if (h >= (1 << 24)) {
		for (int i = 0; i < n && fast; i++) {
			fast = acc[i] <= INT32_MAX - h;
		}
	}
	if ((uintptr_t)out > (uintptr_t)acc) {
		/* out may overlap the end of acc: byte i is written after every
		 * acc[j], j >= i, was read, and byte i lies in acc[j >= i] */
		if (s == 0) {
			for (int i = n - 1; i >= 0; i--) {
				out[i] = (int8_t)acc[i];
			}
		} else if (fast) {
			int i = n - 1;
			for (; i >= 1; i -= 2) {
				out[i] = (int8_t)rshift_round_pos(acc[i], s, h);
				out[i - 1] = (int8_t)rshift_round_pos(acc[i - 1], s, h);
			}
			if (i == 0) {
				out[0] = (int8_t)rshift_round_pos(acc[0], s, h);
			}
		} else {
			for (int i = n - 1; i >= 0; i--) {
				out[i] = (int8_t)kl_rshift_round(acc[i], s);
			}
		}
	} else if (s == 0) { /* out may be acc itself: byte i lies in acc[i / 4], read already */
		for (int i = 0; i < n; i++) {
			out[i] = (int8_t)acc[i];
		}
	} else if (fast) { /* (in place: out[i + 1] lies in acc[(i + 1) / 4], read already) */
		int i = 0;
		for (; i + 2 <= n; i += 2) {
			const int32_t a0 = acc[i], a1 = acc[i + 1];
			out[i] = (int8_t)rshift_round_pos(a0, s, h);
			out[i + 1] = (int8_t)rshift_round_pos(a1, s, h);
		}
		if (i < n) {
			out[i] = (int8_t)rshift_round_pos(acc[i], s, h);
		}
	} else {
		for (int i = 0; i < n; i++) {
			out[i] = (int8_t)kl_rshift_round(acc[i], s);
		}
	}
	return s;
}

int kl_quantize_grad_s32(int32_t *acc, int n)
{
	const int s = grad_shift(acc, n);
	if (s > 0) {
		for (int i = 0; i < n; i++) {
			acc[i] = kl_rshift_round(acc[i], s);
		}
	}
	return s;
}

int kl_argmax_f32(const float *v, int n, const uint8_t *mask)
{
	if (mask == NULL && n > 0) { /* every class: the best value kept in a register */
		int best = 0;
		float bv = v[0];
		for (int i = 1; i < n; i++) {
			if (v[i] > bv) {
				bv = v[i];
				best = i;
			}
		}
		return best;
	}
	int best = -1;
	for (int i = 0; i < n; i++) {
		if ((mask == NULL || mask[i]) && (best < 0 || v[i] > v[best])) {
			best = i;
		}
	}
	return best < 0 ? 0 : best;
}

int kl_argmax_s8(const int8_t *v, int n, const uint8_t *mask)
{
	if (mask == NULL && n > 0) { /* every class: the best value kept in a register */
		int best = 0;
		int32_t bv = v[0];
		int i = 1;
		for (; i + 2 <= n; i += 2) { /* (the first of equal values wins) */
			if (v[i] > bv) {
				bv = v[i];
				best = i;
			}
			if (v[i + 1] > bv) {
				bv = v[i + 1];
				best = i + 1;
			}
		}
		if (i < n && v[i] > bv) {
			best = i;
		}
		return best;
	}
	int best = -1;
	for (int i = 0; i < n; i++) {
		if ((mask == NULL || mask[i]) && (best < 0 || v[i] > v[best])) {
			best = i;
		}
	}
	return best < 0 ? 0 : best;
}
