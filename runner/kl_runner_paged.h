/* The runner's paged mode (kl_runner_paged.c). */
#ifndef KL_RUNNER_PAGED_H
#define KL_RUNNER_PAGED_H

#include <stddef.h>
#include <stdint.h>

#include "kilolearn/kilolearn.h"
#include "kl_job.h"

typedef struct {
	uint64_t bytes, erases; /* programmed and erased since the blob was stored */
	uint32_t folds, slot_size, log_size, sectors;
	uint32_t max_sector_erases; /* the most erased sector's count */
} kl_runner_flash_t;

/* Store the job's blob as a generation in simulated NOR flash; *blob is
 * where it lies (read in place). KL_ENOMEM when the port's memory is short. */
int kl_runner_paged_setup(const kl_job_t *job, const uint8_t **blob, size_t *len);
/* Open the weight log beside it and attach it to the model. */
int kl_runner_paged_attach(kl_model_t *m);
void kl_runner_paged_stats(kl_runner_flash_t *f);

#endif
