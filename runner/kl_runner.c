/*
 * kl_runner: runs one job (train a model on a data set, or dump gradients)
 * with the kilolearn engine and reports over the port's console. The same
 * program runs on the host (posix port) and on the QEMU boards (bare-metal
 * port), so the host harness drives both alike.
 *
 * Output: one record per line, "KL <key> <values...>", integers in decimal,
 * raw tensors as lowercase hex of their little-endian bytes.
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kilolearn.h"
#include "kl_job.h"
#include "kl_port.h"
#include "kl_runner_paged.h"

#ifndef KL_RUNNER_ARENA_SIZE
#define KL_RUNNER_ARENA_SIZE (2048u * 1024u)
#endif

/* 8-aligned, so the arena layout (and its peak) is the planner's to the byte */
static uint64_t arena_mem[KL_RUNNER_ARENA_SIZE / 8u];

static void out_str(const char *s)
{
	kl_port_write(s, strlen(s));
}

static void out_u64(uint64_t v)
{
	char buf[24];
	int n = 0;
	do {
		buf[sizeof(buf) - 1 - n++] = (char)('0' + v % 10u);
		v /= 10u;
	} while (v != 0u);
	kl_port_write(buf + sizeof(buf) - n, (size_t)n);
}

static void out_int(int64_t v)
{
	if (v < 0) {
		out_str("-");
		out_u64((uint64_t)(-(v + 1)) + 1u);
	} else {
		out_u64((uint64_t)v);
	}
}

static void out_kv(const char *key, int64_t v)
{
	out_str(" ");
	out_str(key);
	out_str(" ");
	out_int(v);
}

static void out_hex(const char *name, const void *data, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	const uint8_t *p = data;
	char buf[64];
	size_t k = 0;
	out_str("KL dump ");
	out_str(name);
	out_str(" ");
	for (size_t i = 0; i < n; i++) {
		buf[k++] = digits[p[i] >> 4];
		buf[k++] = digits[p[i] & 15u];
		if (k == sizeof(buf)) {
			kl_port_write(buf, k);
			k = 0;
		}
	}
	kl_port_write(buf, k);
	out_str("\n");
}

/* op i's weights as the blob lays them out (kl_model_op_weights) */
static void out_weights(const kl_model_t *m, int i, const char *name, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	uint8_t w[32];
	char buf[64];
	out_str("KL dump ");
	out_str(name);
	out_str(" ");
	for (size_t at = 0; at < n; at += sizeof(w)) {
		const size_t k = n - at < sizeof(w) ? n - at : sizeof(w);
		(void)kl_model_op_weights(m, i, (uint32_t)at, w, (uint32_t)k);
		for (size_t j = 0; j < k; j++) {
			buf[2 * j] = digits[w[j] >> 4];
			buf[2 * j + 1] = digits[w[j] & 15u];
		}
		kl_port_write(buf, 2 * k);
	}
	out_str("\n");
}

static void dump_name(char *buf, char kind, int layer, const char *suffix)
{
	buf[0] = kind;
	buf[1] = (char)('0' + layer / 10);
	buf[2] = (char)('0' + layer % 10);
	strcpy(buf + 3, suffix);
}

static void dump_layers(const kl_model_t *m, int grads)
{
	char name[16];
	const size_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
	for (int i = 0; i < m->n_ops; i++) {
		const kl_op_t *op = &m->ops[i];
		const kl_tensor_t *y = &m->tensors[op->out];
		const size_t n_b = op->kind == KL_OP_DENSE ? (size_t)y->h * y->w * y->c : y->c;
		if (op->n_w != 0u && grads && op->gb != NULL) {
			if (op->gw != NULL) { /* NULL: the op trains its bias only */
				dump_name(name, 'g', i, "w");
				out_hex(name, op->gw, op->n_w * 4u);
			}
			dump_name(name, 'g', i, "b");
			out_hex(name, op->gb, n_b * 4u);
		} else if (op->n_w != 0u && !grads) {
			dump_name(name, 'w', i, "");
			out_weights(m, i, name, op->n_w * es);
			dump_name(name, 'b', i, "");
			out_hex(name, op->b, n_b * 4u);
		}
		out_str("KL exps");
		out_kv("op", i);
		out_kv("w", op->w_exp);
		out_kv("b", op->b_exp);
		out_kv("y", y->exp);
		out_kv("gw", op->gw_exp);
		out_kv("gb", op->gb_exp);
		out_str("\n");
	}
}

static int fail(const char *what, int err);

/* the model laid out in the arena, with the job's update policy */
static int init_model(kl_model_t *m, kl_arena_t *arena, const uint8_t *blob, size_t len,
		      const kl_train_cfg_t *cfg, const kl_job_t *job)
{
	int err = kl_model_init(m, blob, len, arena, cfg);
	if (err == KL_OK && (job->flags & KL_JOB_UPDATE)) {
		err = kl_model_set_update_policy(m, job->upd_policy, job->upd_frac);
	}
	return err;
}

/* Does the job's model fit its arena? Checked on the job's blob, before it
 * goes to (simulated) flash; KL_ENOMEM names the arena it needs. */
static int check_fits(kl_model_t *m, const kl_job_t *job, const kl_train_cfg_t *cfg)
{
	kl_arena_t a;
	kl_arena_init(&a, arena_mem, job->arena_size);
	int err = init_model(m, &a, job->blob, job->blob_size, cfg, job);
	if (err == KL_ENOMEM) {
		kl_arena_init(&a, arena_mem, sizeof(arena_mem));
		if (init_model(m, &a, job->blob, job->blob_size, cfg, job) == KL_OK) {
			out_str("KL need");
			out_kv("arena", (int64_t)a.used);
			out_kv("have", (int64_t)job->arena_size);
			out_str("\n");
		}
	}
	return err;
}

static int fail(const char *what, int err)
{
	out_str("KL error ");
	out_str(what);
	out_kv("code", err);
	out_str(" ");
	out_str(kl_strerror(err));
	out_str("\n");
	return 1;
}

/* per-phase instruction counts: each hook call closes the running phase */
typedef struct {
	uint64_t insn[KL_PHASE_COUNT];
	uint64_t last;
	int cur;
} profile_t;

static void profile_hook(void *ctx, int p)
{
	profile_t *pr = ctx;
	const uint64_t now = kl_port_insn();
	if (pr->cur >= 0) {
		pr->insn[pr->cur] += now - pr->last;
	}
	pr->cur = p == KL_PHASE_DONE ? -1 : p;
	pr->last = kl_port_insn(); /* the hook's own cost stays outside the phases */
}

static int evaluate(kl_model_t *m, const kl_job_t *job, uint32_t sb, uint64_t *insn)
{
	int correct = 0;
	const uint64_t t0 = kl_port_insn();
	for (uint32_t i = 0; i < job->n_test; i++) {
		correct += kl_predict(m, job->test_x + (size_t)i * sb) == job->test_y[i];
	}
	*insn = kl_port_insn() - t0;
	return correct;
}

/* a training step (or gradients, keep) on sample i: on its target, if the
 * job has targets, else on its label */
static int step(kl_model_t *m, const kl_job_t *job, uint32_t i, uint32_t sb, int keep)
{
	const uint8_t *x = job->train_x + (size_t)i * sb;
	if (job->train_t != NULL) {
		const size_t tb = (size_t)m->n_classes * (m->dtype == KL_DTYPE_S8 ? 1u : 4u);
		const uint8_t *t = job->train_t + (size_t)i * tb;
		return keep ? kl_compute_grads_target(m, x, t) : kl_train_step_target(m, x, t);
	}
	return keep ? kl_compute_grads(m, x, job->train_y[i]) : kl_train_step(m, x, job->train_y[i]);
}

/* the reconstruction error of the last forward pass (MSE models) */
static void out_error(const kl_model_t *m, const kl_job_t *job, uint32_t i, uint32_t sb)
{
	if (m->loss != KL_LOSS_MSE) {
		return;
	}
	const uint8_t *x = job->train_x + (size_t)i * sb;
	const size_t tb = (size_t)m->n_classes * (m->dtype == KL_DTYPE_S8 ? 1u : 4u);
	const void *t = job->train_t != NULL ? job->train_t + (size_t)i * tb : NULL;
	if (m->dtype == KL_DTYPE_S8) {
		uint32_t mant = 0;
		int e = 0;
		if (kl_error_s8(m, x, t, &mant, &e) == KL_OK) {
			out_kv("err", (int64_t)mant);
			out_kv("err_exp", e);
		}
	} else {
		float err = 0.0f;
		if (kl_error_f32(m, x, t, &err) == KL_OK) {
			union {
				float f;
				uint32_t u;
			} v = {err};
			out_kv("err_bits", (int64_t)v.u);
		}
	}
}

static int run_train(kl_model_t *m, const kl_job_t *job, uint32_t sb, int paged)
{
	kl_runner_flash_t fl0 = {0}, fl = {0};
	static profile_t prof;
	const int profiling = (job->flags & KL_JOB_PROFILE) != 0u;
	for (uint32_t e = 1; e <= job->epochs; e++) {
		int correct = 0;
		memset(&prof, 0, sizeof(prof));
		prof.cur = -1;
		if (profiling) {
			m->hook = profile_hook;
			m->hook_ctx = &prof;
		}
		const uint64_t touched0 = m->upd_touched, weights0 = m->upd_weights;
		if (paged) {
			kl_runner_paged_stats(&fl0);
		}
		const uint64_t t0 = kl_port_insn();
		for (uint32_t i = 0; i < job->n_train; i++) {
			const int r = step(m, job, i, sb, 0);
			if (r < 0) {
				return fail("train_step", r);
			}
			correct += r == job->train_y[i];
			if (paged) {
				kl_runner_paged_stats(&fl);
			}
		}
		const uint64_t train_insn = kl_port_insn() - t0;
		m->hook = NULL;
		uint64_t eval_insn = 0;
		const int test_correct = evaluate(m, job, sb, &eval_insn);
		out_str("KL epoch");
		out_kv("n", e);
		out_kv("train_correct", correct);
		out_kv("n_train", job->n_train);
		out_kv("test_correct", test_correct);
		out_kv("n_test", job->n_test);
		out_kv("train_insn", (int64_t)train_insn);
		out_kv("eval_insn", (int64_t)eval_insn);
		out_kv("upd_touched", (int64_t)(m->upd_touched - touched0));
		out_kv("upd_weights", (int64_t)(m->upd_weights - weights0));
		if (paged) {
			out_kv("flash_bytes", (int64_t)(fl.bytes - fl0.bytes));
			out_kv("flash_erases", (int64_t)(fl.erases - fl0.erases));
			out_kv("folds", (int64_t)(fl.folds - fl0.folds));
		}
		if (profiling) {
			out_kv("forward_insn", (int64_t)prof.insn[KL_PHASE_FORWARD]);
			out_kv("loss_insn", (int64_t)prof.insn[KL_PHASE_LOSS]);
			out_kv("backward_insn", (int64_t)prof.insn[KL_PHASE_BACKWARD]);
			out_kv("update_insn", (int64_t)prof.insn[KL_PHASE_UPDATE]);
		}
		out_str("\n");
	}
	return 0;
}

static int run_grads(kl_model_t *m, const kl_job_t *job, uint32_t sb)
{
	const size_t es = m->dtype == KL_DTYPE_S8 ? 1u : 4u;
	for (uint32_t s = 0; s < job->n_steps && s < job->n_train; s++) {
		const int r = step(m, job, s, sb, 1);
		if (r < 0) {
			return fail("compute_grads", r);
		}
		out_str("KL step");
		out_kv("n", s);
		out_kv("pred", r);
		out_kv("dlogits_exp", m->logits_grad_exp);
		out_error(m, job, s, sb);
		out_str("\n");
		out_hex("logits", kl_logits(m), m->n_classes * es);
		dump_layers(m, 1);
		const uint64_t touched0 = m->upd_touched;
		const int err = kl_apply_grads(m);
		if (err < 0) {
			return fail("apply_grads", err);
		}
		out_str("KL applied");
		out_kv("n", s);
		out_kv("upd_touched", (int64_t)(m->upd_touched - touched0));
		out_str("\n");
	}
	return 0;
}

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0) {
		return fail("port_init", KL_EINVAL);
	}
	size_t len = 0;
	const uint8_t *img = kl_port_job(&len);
	kl_job_t job;
	int err = kl_job_parse(img, len, &job);
	if (err != KL_OK) {
		return fail("job", err);
	}
	/* a second region (KL_JOB_FAR): the end of arena_mem, apart from the first */
	const size_t far_size = ((size_t)job.far_size + 7u) & ~(size_t)7u;
	if (far_size > sizeof(arena_mem) / 2u) {
		return fail("far region", KL_ENOMEM);
	}
	const size_t room = sizeof(arena_mem) - far_size;
	if (job.arena_size == 0u || job.arena_size > room) {
		job.arena_size = (uint32_t)room;
	}
	kl_arena_t arena;
	kl_arena_t far;
	kl_arena_init(&arena, arena_mem, job.arena_size);
	kl_arena_init(&far, (uint8_t *)arena_mem + room, job.far_size);
	if (job.far_size != 0u) {
		kl_arena_set_far(&arena, &far);
	}
	const kl_train_cfg_t cfg = {
		.lr = job.lr,
		.momentum = job.momentum,
		.seed = job.seed,
		.flags = job.cmd == KL_JOB_GRADS ? KL_CFG_KEEP_GRADS : 0u,
		.optimizer = job.optimizer,
		.batch = job.batch,
		.beta1 = job.beta1,
		.beta2 = job.beta2,
		.eps = job.eps,
	};
	static kl_model_t model;
	const int paged = (job.flags & KL_JOB_PAGED) != 0u;
	const uint8_t *blob = job.blob;
	size_t blob_len = job.blob_size;
	if (paged) { /* the blob into simulated flash, read from there */
		err = check_fits(&model, &job, &cfg); /* nothing written yet */
		if (err != KL_OK) {
			return fail("model", err);
		}
		err = kl_runner_paged_setup(&job, &blob, &blob_len);
		if (err != KL_OK) {
			return fail("paged store", err);
		}
	}
	err = kl_model_init(&model, blob, blob_len, &arena, &cfg);
	if (err != KL_OK) {
		return fail("model", err);
	}
	if (paged) {
		err = kl_runner_paged_attach(&model);
		if (err != KL_OK) {
			return fail("weight log", err);
		}
	}
	if (job.flags & KL_JOB_UPDATE) {
		err = kl_model_set_update_policy(&model, job.upd_policy, job.upd_frac);
		if (err != KL_OK) {
			return fail("update policy", err);
		}
	}
	const uint32_t sb = model.n_inputs * (model.dtype == KL_DTYPE_S8 ? 1u : 4u);
	err = kl_job_check_samples(&job, sb);
	if (err == KL_OK) {
		err = kl_job_check_targets(&job, model.n_classes *
						     (model.dtype == KL_DTYPE_S8 ? 1u : 4u));
	}
	if (err != KL_OK) {
		return fail("job samples", err);
	}
	out_str("KL model");
	out_kv("dtype", model.dtype);
	out_kv("ops", model.n_ops);
	out_kv("arena", (int64_t)arena.used);
	out_kv("counter", kl_port_has_counter());
	out_kv("policy", model.upd_policy);
	out_kv("permille", model.upd_frac);
	out_kv("paged", model.paged);
	out_str("\n");
	if (paged) {
		kl_runner_flash_t fl;
		kl_runner_paged_stats(&fl);
		out_str("KL store");
		out_kv("slots", fl.slot_size);
		out_kv("log", fl.log_size);
		out_kv("sectors", fl.sectors);
		out_str("\n");
	}
	int rc = job.cmd == KL_JOB_TRAIN ? run_train(&model, &job, sb, paged)
					 : run_grads(&model, &job, sb);
	if (rc == 0 && (job.flags & KL_JOB_DUMP_WEIGHTS)) {
		if (paged) { /* the logged rows folded into the blob: contiguous again */
			err = kl_model_fold(&model);
			if (err != KL_OK) {
				return fail("fold", err);
			}
		}
		dump_layers(&model, 0);
	}
	if (paged) {
		kl_runner_flash_t fl;
		kl_runner_paged_stats(&fl);
		out_str("KL wear");
		out_kv("max_sector_erases", fl.max_sector_erases);
		out_kv("erases", (int64_t)fl.erases);
		out_str("\n");
	}
	out_str("KL done");
	out_kv("arena_peak", (int64_t)arena.peak);
	if (job.far_size != 0u) {
		out_kv("far_peak", (int64_t)far.peak);
	}
	out_kv("rc", rc);
	out_str("\n");
	return rc;
}
