/*
 * Calls into CMSIS-NN counted by src/cmsis_nn.c's -Wl,--wrap wrappers (built only with
 * CONFIG_KILOLEARN_KERNELS_CMSIS_NN).
 */
#ifndef KL_ZTEST_CMSIS_CALLS_H
#define KL_ZTEST_CMSIS_CALLS_H

#include <stdint.h>

struct kl_test_cmsis_calls {
	uint32_t fc;   /* arm_fully_connected_s8 */
	uint32_t conv; /* arm_convolve_wrapper_s8 */
	uint32_t dw;   /* arm_depthwise_conv_wrapper_s8 */
};

void kl_test_cmsis_calls_get(struct kl_test_cmsis_calls *out);

#endif
