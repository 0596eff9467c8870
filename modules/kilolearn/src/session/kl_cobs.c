/* COBS framing (Cheshire & Baker): no zero byte in the encoded data, so a
 * zero delimits frames on the wire. */
#include "kilolearn/kl_session.h"

size_t kl_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t o = 1, code_at = 0;
	uint8_t code = 1;
	if (cap == 0u) {
		return 0;
	}
	for (size_t i = 0; i < n; i++) {
		if (in[i] == 0u) {
			out[code_at] = code;
			code = 1;
			code_at = o++;
		} else {
			if (o >= cap) {
				return 0;
			}
			out[o++] = in[i];
			if (++code == 0xFFu) {
				out[code_at] = code;
				code = 1;
				code_at = o++;
			}
		}
		if (o > cap) {
			return 0;
		}
	}
	if (code_at >= cap) {
		return 0;
	}
	out[code_at] = code;
	return o;
}

size_t kl_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
	size_t i = 0, o = 0;
	while (i < n) {
		const uint8_t code = in[i++];
		if (code == 0u) {
			return 0;
		}
		for (uint8_t k = 1; k < code; k++) {
			if (i >= n || in[i] == 0u || o >= cap) {
				return 0;
			}
			out[o++] = in[i++];
		}
		if (code != 0xFFu && i < n) {
			if (o >= cap) {
				return 0;
			}
			out[o++] = 0;
		}
	}
	return o;
}
