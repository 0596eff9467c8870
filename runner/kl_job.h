/*
 * Job images: what the host harness hands a runner (a file on the host, a
 * memory image loaded by QEMU on the boards). Little-endian, CRC-checked,
 * version 1. Written by scripts/kilolearn/device/job.py.
 */
#ifndef KL_JOB_H
#define KL_JOB_H

#include <stddef.h>
#include <stdint.h>

#define KL_JOB_MAGIC       0x424A4C4Bu /* "KLJB" */
#define KL_JOB_VERSION     1u
#define KL_JOB_HEADER_SIZE 80u

enum kl_job_cmd { KL_JOB_TRAIN = 1, KL_JOB_GRADS = 2 };
#define KL_JOB_DUMP_WEIGHTS 0x01u
#define KL_JOB_PROFILE      0x02u /* per-phase instruction counts while training */
#define KL_JOB_UPDATE       0x04u /* set the update policy (kl_model_set_update_policy) */
#define KL_JOB_PAGED        0x08u /* blob in a NOR-simulated store, a weight log beside it */
#define KL_JOB_TARGETS      0x10u /* train targets (MSE, BCE) at the offset in bytes 72..75,
				   * n_classes values of the model's dtype per sample; not with
				   * KL_JOB_PAGED */
#define KL_JOB_OPTIM        0x20u /* optimiser options in bytes 80..95 (right after the
				   * header): u8 optimizer, u8 0, u16 batch, f32 beta1, beta2, eps */
#define KL_JOB_FAR          0x40u /* a second arena region (kl_arena_set_far) of far_size */

typedef struct {
	uint16_t cmd, epochs, flags;
	float lr, momentum;
	uint32_t seed, n_steps, arena_size;
	uint32_t log_size;    /* with KL_JOB_PAGED: bytes of the weight log (0: the rest) */
	uint32_t far_size;    /* with KL_JOB_FAR (not with PAGED): the second region's bytes */
	uint8_t upd_policy;   /* with KL_JOB_UPDATE: enum kl_update_policy */
	uint16_t upd_frac;    /* per mille */
	uint8_t optimizer;    /* with KL_JOB_OPTIM, else 0 (SGD) */
	uint16_t batch;
	float beta1, beta2, eps;
	const uint8_t *blob;
	uint32_t blob_size;
	uint32_t n_train, n_test;
	const uint8_t *train_x, *train_y, *test_x, *test_y;
	const uint8_t *train_t; /* with KL_JOB_TARGETS, else NULL */
	uint32_t total, train_x_off, test_x_off, train_t_off;
} kl_job_t;

/* Check and decode a job image; sample sizes are checked against
 * sample_bytes (the model's input size in bytes) by the caller. Returns 0 or
 * a negative error code (KL_E*). */
int kl_job_parse(const uint8_t *img, size_t len, kl_job_t *job);

/* Do n_train and n_test samples of sample_bytes each fit in the image? */
int kl_job_check_samples(const kl_job_t *job, uint32_t sample_bytes);
/* Do n_train targets of target_bytes each fit (with KL_JOB_TARGETS)? */
int kl_job_check_targets(const kl_job_t *job, uint32_t target_bytes);

#endif
