/* The window loop shared by the ref conv, depthwise and pooling kernels. */
#ifndef KL_WINDOW_H
#define KL_WINDOW_H

/* Run body for every kernel tap of output pixel (oy, ox) that falls inside
 * the input (padding taps are skipped: they contribute the real value 0).
 * Binds xo, the offset of input pixel (iy, ix) in the HWC tensor, and to,
 * the offset of tap (ky, kx) in a [kh][kw][c] weight slice. */
#define KL_FOR_TAPS(g, oy, ox, body)                                                              \
	for (int ky = 0; ky < (g)->kh; ky++) {                                                    \
		const int iy = (oy) * (g)->stride + ky - (g)->pad_t;                              \
		if (iy < 0 || iy >= (g)->h) {                                                     \
			continue;                                                                 \
		}                                                                                 \
		for (int kx = 0; kx < (g)->kw; kx++) {                                            \
			const int ix = (ox) * (g)->stride + kx - (g)->pad_l;                      \
			if (ix < 0 || ix >= (g)->w) {                                             \
				continue;                                                         \
			}                                                                         \
			const long xo = ((long)iy * (g)->w + ix) * (g)->c;                        \
			const long to = ((long)ky * (g)->kw + kx) * (g)->c;                       \
			(void)to;                                                                 \
			body                                                                      \
		}                                                                                 \
	}

#endif
