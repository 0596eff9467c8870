/*
 * kilolearn under Zephyr's minimal libc (CONFIG_KILOLEARN_LIBM_COMPAT): the
 * minimal libc's <math.h> declares only sqrtf() and sqrt(), while the float32
 * softmax-CE kernel calls expf() and logf(). This header sits first on the
 * kilolearn library's include path only; it pulls in the libc's <math.h> and
 * maps expf/logf (and fabsf, ldexpf, tanhf, log1pf) onto the module's own implementations (kl_libm_compat.c), so
 * no libc symbol is defined or shadowed.
 */
#ifndef KL_LIBM_COMPAT_MATH_H
#define KL_LIBM_COMPAT_MATH_H

#include_next <math.h>

float kl_compat_expf(float x);
float kl_compat_logf(float x);
float kl_compat_fabsf(float x);
float kl_compat_ldexpf(float x, int e);
float kl_compat_tanhf(float x);
float kl_compat_log1pf(float x);

#define expf(x)      kl_compat_expf(x)
#define logf(x)      kl_compat_logf(x)
#define fabsf(x)     kl_compat_fabsf(x)
#define ldexpf(x, e) kl_compat_ldexpf(x, e)
#define tanhf(x)     kl_compat_tanhf(x)
#define log1pf(x)    kl_compat_log1pf(x)

#endif /* KL_LIBM_COMPAT_MATH_H */
