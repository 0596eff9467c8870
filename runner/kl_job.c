#include "kl_job.h"

#include "kilolearn/kilolearn.h"

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static float rdf(const uint8_t *p)
{
	union {
		uint32_t u;
		float f;
	} v;
	v.u = rd32(p);
	return v.f;
}

static int in_range(uint32_t off, uint64_t size, uint32_t total)
{
	return off >= KL_JOB_HEADER_SIZE && off <= total && size <= (uint64_t)(total - off);
}

int kl_job_parse(const uint8_t *img, size_t len, kl_job_t *job)
{
	if (img == NULL || len < KL_JOB_HEADER_SIZE) {
		return KL_ETRUNC;
	}
	if (rd32(img) != KL_JOB_MAGIC) {
		return KL_EBADMAGIC;
	}
	if (rd16(img + 4) != KL_JOB_VERSION) {
		return KL_EVERSION;
	}
	const uint32_t total = rd32(img + 8);
	if (total > len || total < KL_JOB_HEADER_SIZE) {
		return KL_ETRUNC;
	}
	if (kl_crc32(0, img + 16, total - 16u) != rd32(img + 12)) {
		return KL_ECRC;
	}
	job->cmd = rd16(img + 6);
	job->lr = rdf(img + 16);
	job->momentum = rdf(img + 20);
	job->seed = rd32(img + 24);
	job->epochs = rd16(img + 28);
	job->flags = rd16(img + 30);
	const uint32_t blob_off = rd32(img + 32);
	job->blob_size = rd32(img + 36);
	job->n_train = rd32(img + 40);
	job->n_test = rd32(img + 52);
	job->n_steps = rd32(img + 64);
	job->arena_size = rd32(img + 68);
	job->log_size = (job->flags & KL_JOB_PAGED) != 0u ? rd32(img + 72) : 0u;
	/* the same word: the weight log's bytes (PAGED), the far region's (FAR), the
	 * targets' offset (TARGETS): one of them at most */
	if ((job->flags & KL_JOB_FAR) && (job->flags & (KL_JOB_PAGED | KL_JOB_TARGETS))) {
		return KL_ECORRUPT;
	}
	job->far_size = (job->flags & KL_JOB_FAR) != 0u ? rd32(img + 72) : 0u;
	job->upd_policy = img[76];
	job->upd_frac = rd16(img + 78);
	job->optimizer = 0;
	job->batch = 0;
	job->beta1 = job->beta2 = job->eps = 0.0f;
	if (job->flags & KL_JOB_OPTIM) {
		if (total < KL_JOB_HEADER_SIZE + 16u) {
			return KL_ECORRUPT;
		}
		job->optimizer = img[80];
		job->batch = rd16(img + 82);
		job->beta1 = rdf(img + 84);
		job->beta2 = rdf(img + 88);
		job->eps = rdf(img + 92);
	}
	if ((job->cmd != KL_JOB_TRAIN && job->cmd != KL_JOB_GRADS) || (blob_off & 3u) != 0u ||
	    !in_range(blob_off, job->blob_size, total) ||
	    !in_range(rd32(img + 44), 0, total) || !in_range(rd32(img + 48), job->n_train, total) ||
	    !in_range(rd32(img + 56), 0, total) || !in_range(rd32(img + 60), job->n_test, total) ||
	    ((job->flags & KL_JOB_TARGETS) != 0u &&
	     ((job->flags & KL_JOB_PAGED) != 0u || (rd32(img + 72) & 3u) != 0u ||
	      !in_range(rd32(img + 72), 0, total)))) {
		return KL_ECORRUPT;
	}
	job->total = total;
	job->train_x_off = rd32(img + 44);
	job->test_x_off = rd32(img + 56);
	job->blob = img + blob_off;
	job->train_x = img + rd32(img + 44);
	job->train_y = img + rd32(img + 48);
	job->test_x = img + rd32(img + 56);
	job->test_y = img + rd32(img + 60);
	job->train_t_off = (job->flags & KL_JOB_TARGETS) != 0u ? rd32(img + 72) : 0u;
	job->train_t = job->train_t_off != 0u ? img + job->train_t_off : NULL;
	return KL_OK;
}


int kl_job_check_samples(const kl_job_t *job, uint32_t sample_bytes)
{
	if (!in_range(job->train_x_off, (uint64_t)job->n_train * sample_bytes, job->total) ||
	    !in_range(job->test_x_off, (uint64_t)job->n_test * sample_bytes, job->total)) {
		return KL_ECORRUPT;
	}
	return KL_OK;
}

int kl_job_check_targets(const kl_job_t *job, uint32_t target_bytes)
{
	if (job->train_t != NULL &&
	    !in_range(job->train_t_off, (uint64_t)job->n_train * target_bytes, job->total)) {
		return KL_ECORRUPT;
	}
	return KL_OK;
}
