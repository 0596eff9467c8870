/*
 * expf() and logf() for builds on Zephyr's minimal libc, which has neither
 * (see libm_compat/math.h). Single-precision Cephes-style algorithms: Cody-Waite
 * range reduction and a short polynomial; relative error within about 2 ulp
 * over the whole range, which the float32 tests (1e-5 relative) need.
 */
#include <stdint.h>
#include <string.h>

float kl_compat_expf(float x);
float kl_compat_logf(float x);
float kl_compat_fabsf(float x);
float kl_compat_ldexpf(float x, int e);
float kl_compat_tanhf(float x);
float kl_compat_log1pf(float x);

static float from_bits(uint32_t u)
{
	float f;

	memcpy(&f, &u, sizeof(f));
	return f;
}

static uint32_t to_bits(float f)
{
	uint32_t u;

	memcpy(&u, &f, sizeof(u));
	return u;
}

/* 2^k for -126 <= k <= 127 */
static float pow2i(int k)
{
	return from_bits((uint32_t)(k + 127) << 23);
}

float kl_compat_expf(float x)
{
	if (x != x) {
		return x; /* NaN */
	}
	if (x > 88.72283935546875f) {
		return from_bits(0x7f800000u); /* +inf */
	}
	if (x < -103.97207708f) {
		return 0.0f;
	}
	/* x = k ln2 + r, |r| <= ln2 / 2 */
	const float fk = x * 1.44269504088896341f;
	const int k = (int)(fk < 0.0f ? fk - 0.5f : fk + 0.5f);
	const float r = (x - (float)k * 0.693359375f) - (float)k * -2.12194440e-4f;
	const float z = r * r;
	float y = 1.9875691500e-4f;

	y = y * r + 1.3981999507e-3f;
	y = y * r + 8.3334519073e-3f;
	y = y * r + 4.1665795894e-2f;
	y = y * r + 1.6666665459e-1f;
	y = y * r + 5.0000001201e-1f;
	y = y * z + r + 1.0f;
	/* y * 2^k, in two steps where 2^k alone is not a normal float */
	if (k > 127) {
		return y * pow2i(127) * pow2i(k - 127);
	}
	if (k < -126) {
		return y * pow2i(-126) * pow2i(k + 126);
	}
	return y * pow2i(k);
}

float kl_compat_logf(float x)
{
	uint32_t u = to_bits(x);
	int e = 0;

	if (x != x) {
		return x; /* NaN */
	}
	if (x <= 0.0f) {
		return x == 0.0f ? from_bits(0xff800000u) /* -inf */
				 : from_bits(0x7fc00000u); /* NaN */
	}
	if (u >= 0x7f800000u) {
		return x; /* +inf */
	}
	if (u < 0x00800000u) { /* subnormal: scale into the normal range */
		x *= 33554432.0f;  /* 2^25 */
		u = to_bits(x);
		e = -25;
	}
	/* x = m 2^e with m in [0.5, 1) */
	e += (int)(u >> 23) - 126;
	float m = from_bits((u & 0x007fffffu) | 0x3f000000u);

	if (m < 0.707106781186547524f) {
		e -= 1;
		m = m + m - 1.0f;
	} else {
		m = m - 1.0f;
	}
	const float z = m * m;
	float y = 7.0376836292e-2f;

	y = y * m - 1.1514610310e-1f;
	y = y * m + 1.1676998740e-1f;
	y = y * m - 1.2420140846e-1f;
	y = y * m + 1.4249322787e-1f;
	y = y * m - 1.6668057665e-1f;
	y = y * m + 2.0000714765e-1f;
	y = y * m - 2.4999993993e-1f;
	y = y * m + 3.3333331174e-1f;
	y = y * m * z;
	const float fe = (float)e;

	y += -2.12194440e-4f * fe;
	y += -0.5f * z;
	return (m + y) + 0.693359375f * fe;
}

float kl_compat_fabsf(float x)
{
	uint32_t u;

	memcpy(&u, &x, sizeof(u));
	return from_bits(u & 0x7FFFFFFFu);
}

/* x * 2^e, in steps of at most 2^+-100 (exact while the result is normal) */
float kl_compat_ldexpf(float x, int e)
{
	while (e > 100) {
		x *= from_bits((uint32_t)(100 + 127) << 23);
		e -= 100;
	}
	while (e < -100) {
		x *= from_bits((uint32_t)(-100 + 127) << 23);
		e += 100;
	}
	return x * from_bits((uint32_t)(e + 127) << 23);
}

/* tanh(x) = 1 - 2 / (exp(2|x|) + 1) with the sign of x; near 0 its series
 * (the subtraction would lose the small values' digits) */
float kl_compat_tanhf(float x)
{
	const float a = kl_compat_fabsf(x);
	float t;

	if (a < 0.0625f) {
		const float x2 = a * a;
		t = a * (1.0f + x2 * (-1.0f / 3.0f + x2 * (2.0f / 15.0f - x2 * (17.0f / 315.0f))));
	} else if (a > 9.0f) {
		t = 1.0f;
	} else {
		t = 1.0f - 2.0f / (kl_compat_expf(2.0f * a) + 1.0f);
	}
	return x < 0.0f ? -t : t;
}

/* log(1 + x): log(u) * x / (u - 1) with u = 1 + x rounded, which cancels
 * that rounding (Goldberg) */
float kl_compat_log1pf(float x)
{
	const float u = 1.0f + x;

	if (u == 1.0f) {
		return x;
	}
	return kl_compat_logf(u) * x / (u - 1.0f);
}
