#include <math.h>
/* The session's data commands: TRAIN (with latent replay), EVAL, PREDICT,
 * STATS, and the trained blob composed over the stored one for COMMIT and
 * READ. */
#include <string.h>

#include "kl_session_priv.h"

static int check_sample(const kl_session_t *s, uint32_t n, int with_label)
{
	if (!s->loaded) {
		return KL_ENOMODEL;
	}
	return n == kl_sess_sample_bytes(s) + (with_label ? 2u : 0u) ? KL_OK : KL_EINVAL;
}

/* The sample at p (n bytes, in the frame buffer) moved down to a 4-byte
 * boundary, over bytes already read (the label, the frame header): the
 * engine reads float samples as floats. The frame buffer is word-aligned and
 * the payload starts 6 bytes in, so there is room below. */
static const void *aligned_sample(uint8_t *p, uint32_t n)
{
	const uintptr_t mis = (uintptr_t)p & 3u;
	if (mis != 0u) {
		memmove(p - mis, p, n);
	}
	return p - mis;
}

/* latent replay after a step on label: the cut's latent offered to the
 * buffer (in the arena or in flash), replay_ratio latents drawn and trained */
static int replay(kl_session_t *s, int label, uint32_t *replayed)
{
	const int flash = s->set.replay_where != KL_REPLAY_ARENA;
	const void *latent = s->model.tensors[s->set.cut].data;
	if (flash) {
		const int r = kl_freplay_add(&s->freplay, latent, label);
		if (r < -1) {
			return r; /* the replay store failed */
		}
	} else {
		kl_replay_add(&s->replay, latent, label);
	}
	for (uint32_t r = 0; r < s->set.replay_ratio; r++) {
		const int slot = flash ? kl_freplay_pick(&s->freplay) : kl_replay_pick(&s->replay);
		if (slot < 0) {
			break;
		}
		const void *x = flash ? kl_freplay_latent(&s->freplay, slot)
				      : kl_replay_latent(&s->replay, slot);
		if (x == NULL) {
			return KL_EIO;
		}
		const int err = kl_train_step_from(&s->model, s->set.cut, x,
						   flash ? kl_freplay_label(&s->freplay, slot)
							 : s->replay.labels[slot]);
		if (err < 0) {
			return err;
		}
		(*replayed)++;
	}
	return KL_OK;
}

/* the last step's (or prediction's) reconstruction error as a float: s8 the
 * integers of kl_mse_err_s8 scaled, f32 the sum of squares */
static float score_of(const kl_model_t *m)
{
	if (m->dtype == KL_DTYPE_F32) {
		return m->loss_f32 * (float)m->n_classes;
	}
	return ldexpf((float)m->err_mant, m->err_exp);
}

/* exponential moving mean and variance of the training stream's errors */
static void learn_threshold(kl_session_t *s, float v)
{
	const float a = 1.0f / (float)(1u << KL_ANOMALY_SHIFT);
	if (s->score_n++ == 0u) {
		s->score_mean = v;
		s->score_var = 0.0f;
		return;
	}
	const float d = v - s->score_mean;
	s->score_mean += a * d;
	s->score_var = (1.0f - a) * (s->score_var + a * d * d);
}

float kl_sess_threshold(const kl_session_t *s)
{
	return s->score_n == 0u ? 0.0f : s->score_mean + KL_ANOMALY_K * sqrtf(s->score_var);
}

int kl_sess_cmd_train(kl_session_t *s, uint8_t *p, uint32_t n, uint8_t *out)
{
	int err = check_sample(s, n, 1);
	if (err != KL_OK) {
		return err;
	}
	const int label = kl_rd16(p);
	if (label >= s->model.n_classes) {
		return KL_EINVAL;
	}
	const void *x = aligned_sample(p + 2, n - 2u);
	if (s->set.auto_classes) {
		s->set.class_mask[label] = 1;
	}
	const uint64_t t0 = kl_sess_now(s);
	s->state_seq++; /* the weights change from here on, even if the step fails */
	const int pred = kl_train_step(&s->model, x, label);
	if (pred < 0) {
		return pred;
	}
	s->train_steps++;
	if (s->model.loss == KL_LOSS_MSE) { /* the error before the update: the threshold */
		learn_threshold(s, score_of(&s->model));
	}
	uint32_t replayed = 0;
	if (s->set.cut != 0xFFFFu) {
		err = replay(s, label, &replayed);
		s->replay_steps += replayed;
		if (err < 0) {
			return err;
		}
	}
	if (s->set.buf_cap != 0u) {
		kl_samples_add(&s->samples, x, label);
	}
	s->train_insn += kl_sess_now(s) - t0;
	kl_wr16(out, (uint32_t)pred);
	kl_wr16(out + 2, replayed);
	return 4;
}

/* EPOCHS: u16 epochs (1..KL_SESSION_MAX_EPOCHS) over the buffered samples,
 * each epoch in a new shuffled order, at most KL_SESSION_MAX_EPOCH_STEPS
 * steps in all. Reply: u32 steps, u32 predictions before the update that were
 * right. */
int kl_sess_cmd_epochs(kl_session_t *s, const uint8_t *p, uint32_t n, uint8_t *out)
{
	if (!s->loaded) {
		return KL_ENOMODEL;
	}
	if (n != 2u || kl_rd16(p) == 0u || kl_rd16(p) > KL_SESSION_MAX_EPOCHS) {
		return KL_EINVAL;
	}
	if (s->set.buf_cap == 0u) {
		return KL_ESTATE; /* no sample buffer configured (CONFIG key 8) */
	}
	const uint32_t epochs = kl_rd16(p);
	if ((uint64_t)epochs * s->samples.count > KL_SESSION_MAX_EPOCH_STEPS) {
		return KL_EINVAL; /* fewer epochs per request */
	}
	uint32_t steps = 0, correct = 0;
	const uint64_t t0 = kl_sess_now(s);
	s->state_seq++;
	for (uint32_t e = 0; e < epochs; e++) {
		uint32_t ok;
		const int r = kl_samples_epoch(&s->samples, &s->model, &ok);
		if (r < 0) {
			return r;
		}
		steps += (uint32_t)r;
		correct += ok;
	}
	s->train_steps += steps;
	s->train_insn += kl_sess_now(s) - t0;
	kl_wr32(out, steps);
	kl_wr32(out + 4, correct);
	return 8;
}

int kl_sess_cmd_eval(kl_session_t *s, uint8_t *p, uint32_t n, uint8_t *out, int predict)
{
	const int err = check_sample(s, n, !predict);
	if (err != KL_OK) {
		return err;
	}
	const int label = predict ? -1 : (int)kl_rd16(p);
	const void *x = aligned_sample(predict ? p : p + 2, n - (predict ? 0u : 2u));
	const int pred = kl_predict(&s->model, x);
	if (pred < 0) {
		return pred;
	}
	kl_wr16(out, (uint32_t)pred);
	if (!predict && s->model.loss == KL_LOSS_MSE) {
		/* an autoencoder: its score (the reconstruction error), the threshold
		 * learnt from the training stream, and the verdict */
		out[2] = 0;
		uint32_t mant = 0;
		int e = 0;
		float sc = 0.0f;
		if (s->model.dtype == KL_DTYPE_S8) {
			(void)kl_error_s8(&s->model, x, NULL, &mant, &e);
			sc = ldexpf((float)mant, e);
		} else {
			(void)kl_error_f32(&s->model, x, NULL, &sc);
			memcpy(&mant, &sc, 4u);
		}
		const float thr = kl_sess_threshold(s);
		kl_wr32(out + 3, mant);
		out[7] = (uint8_t)(int8_t)e;
		out[8] = (uint8_t)(s->score_n != 0u && sc > thr);
		uint32_t tb;
		memcpy(&tb, &thr, 4u);
		kl_wr32(out + 9, tb);
		return 13;
	}
	if (!predict) {
		out[2] = (uint8_t)(pred == label);
		return 3;
	}
	const uint32_t nl = (uint32_t)s->model.n_classes * (s->model.dtype == KL_DTYPE_S8 ? 1u : 4u);
	if (2u + nl > KL_SESSION_MAX_PAYLOAD - 4u) {
		return 2;
	}
	memcpy(out + 2, kl_logits(&s->model), nl);
	return (int)(2u + nl);
}

/* the replay buffer's part of a STATS reply, after the sectors' wear */
#define KL_STATS_REPLAY 33u
/* sectors whose wear fits in a STATS reply */
#define KL_STATS_MAX_SECTORS ((KL_SESSION_MAX_PAYLOAD - 4u - 58u - KL_STATS_REPLAY) / 8u)

/* where the replay buffer lives, its latents, and the replay store's wear */
static uint32_t stats_replay(const kl_session_t *s, uint8_t *out)
{
	const int on = s->set.cut != 0xFFFFu && s->loaded;
	const int flash = s->set.replay_where != KL_REPLAY_ARENA;
	const kl_freplay_t *f = &s->freplay;
	const kl_store_t *rs = s->cfg.replay_store;
	out[0] = s->set.replay_where;
	kl_wr32(out + 1, on ? (flash ? f->r.count : s->replay.count) : 0u);
	kl_wr32(out + 5, on ? s->set.replay_cap : 0u);
	kl_wr32(out + 9, rs != NULL ? rs->size : 0u);
	kl_wr32(out + 13, rs != NULL ? rs->bytes_written : 0u);
	kl_wr32(out + 17, rs != NULL ? rs->erases : 0u);
	kl_wr32(out + 21, on && flash ? f->copies : 0u);
	kl_wr32(out + 25, on && flash ? f->hits : 0u);
	kl_wr32(out + 29, on && flash ? f->misses : 0u);
	return KL_STATS_REPLAY;
}

int kl_sess_cmd_stats(kl_session_t *s, uint8_t *out)
{
	const uint32_t active = kl_sess_active_classes(s);
	kl_wr32(out, s->train_steps);
	kl_wr32(out + 4, s->replay_steps);
	kl_wr32(out + 8, (uint32_t)s->train_insn);
	kl_wr32(out + 12, (uint32_t)(s->train_insn >> 32));
	kl_wr32(out + 16, (uint32_t)s->arena.used);
	kl_wr32(out + 20, (uint32_t)s->arena.peak);
	kl_wr32(out + 24, s->set.cut == 0xFFFFu || !s->loaded ? 0u
			  : s->set.replay_where != KL_REPLAY_ARENA ? s->freplay.r.count
								   : s->replay.count);
	const kl_store_t *st = s->cfg.store;
	kl_wr32(out + 28, st->bytes_written);
	kl_wr32(out + 32, st->erases);
	kl_wr16(out + 36, active);
	/* the store: active generation, geometry, wear per sector */
	kl_wr32(out + 38, s->slots.have_active ? (uint32_t)s->slots.active.seq : 0u); /* low half */
	kl_wr32(out + 42, s->slots.have_active ? s->slots.active.off : 0xFFFFFFFFu);
	kl_wr32(out + 46, st->geom.erase_block);
	kl_wr16(out + 50, st->geom.write_block);
	out[52] = st->geom.erase_value;
	out[53] = (uint8_t)((st->base != NULL ? 1u : 0u) |
			    (st->sector_erases != NULL && st->sector_bytes != NULL ? 2u : 0u));
	const uint32_t n_sec = kl_store_sectors(st);
	uint32_t k = (out[53] & 2u) ? n_sec : 0u;
	if (k > KL_STATS_MAX_SECTORS) {
		k = KL_STATS_MAX_SECTORS;
	}
	kl_wr16(out + 54, n_sec > 0xFFFFu ? 0xFFFFu : n_sec);
	kl_wr16(out + 56, k);
	for (uint32_t i = 0; i < k; i++) {
		kl_wr32(out + 58 + 8u * i, st->sector_erases[i]);
		kl_wr32(out + 62 + 8u * i, st->sector_bytes[i]);
	}
	return (int)(58u + 8u * k + stats_replay(s, out + 58 + 8u * k));
}

/* bytes [off, off + n) of the blob as trained: the model's own composition
 * (kl_model_blob_read: exponents, trained weights, a paged model's rows) */
static void compose(const kl_session_t *s, const uint8_t *blob, uint32_t off, uint8_t *buf,
		    uint32_t n)
{
	(void)blob; /* the pinned blob: the one the model reads */
	(void)kl_model_blob_read(&s->model, off, buf, n);
}

static uint32_t composed_crc(const kl_session_t *s, const uint8_t *blob, uint32_t len)
{
	uint8_t buf[256];
	uint32_t crc = 0;
	for (uint32_t off = KL_BLOB_CRC_START; off < len; off += sizeof(buf)) {
		const uint32_t n = len - off < sizeof(buf) ? len - off : (uint32_t)sizeof(buf);
		compose(s, blob, off, buf, n);
		crc = kl_crc32(crc, buf, n);
	}
	return crc;
}

/* bytes [off, off + n) of the trained blob with its header CRC set to crc */
static void compose_sealed(const kl_session_t *s, const uint8_t *blob, uint32_t off, uint8_t *buf,
			   uint32_t n, uint32_t crc)
{
	compose(s, blob, off, buf, n);
	for (uint32_t k = 0; k < 4u; k++) {
		const uint32_t at = KL_BH_CRC + k;
		if (at >= off && at < off + n) {
			buf[at - off] = (uint8_t)(crc >> (8u * k));
		}
	}
}

/* the blob the running model was started from (read in place) */
static const uint8_t *pinned_blob(const kl_session_t *s, uint32_t *len)
{
	*len = s->slots.pin.len;
	return s->cfg.store->base + s->slots.pin.off + s->slots.data_off;
}

/* COMMIT: the trained parameters as a new generation of the stored blob
 * (CRC resealed), written to a free run of sectors and switched to by its
 * slot header, programmed last: a power cut leaves the old or the new one.
 * The model keeps reading frozen weights from its own (pinned) slot. */
int kl_sess_cmd_commit(kl_session_t *s)
{
	if (!s->loaded || !s->slots.have_pin) {
		return KL_ENOMODEL;
	}
	if (s->model.paged) { /* its steps are in the log already: fold it into a generation */
		return kl_model_fold(&s->model);
	}
	uint32_t len;
	const uint8_t *blob = pinned_blob(s, &len);
	const uint32_t crc = composed_crc(s, blob, len);
	uint8_t buf[256];
	int err = kl_slots_begin(&s->slots, len);
	for (uint32_t off = 0; err == KL_OK && off < len; off += sizeof(buf)) {
		const uint32_t n = len - off < sizeof(buf) ? len - off : (uint32_t)sizeof(buf);
		compose_sealed(s, blob, off, buf, n, crc);
		err = kl_slots_write(&s->slots, buf, n);
	}
	if (err == KL_OK) {
		err = kl_slots_finish(&s->slots, kl_slots_written_crc(&s->slots));
	}
	if (err == KL_OK) { /* what the next boot would run must pass the engine's check */
		uint32_t n;
		const uint8_t *fresh = kl_slots_pending(&s->slots, &n);
		err = fresh != NULL ? kl_sess_blob_check(fresh, n) : KL_ENOTSUP;
	}
	if (err == KL_OK) {
		err = kl_slots_commit(&s->slots);
	}
	if (err != KL_OK) {
		kl_slots_abort(&s->slots);
	}
	return err;
}

/* READ: bytes of a blob, for the host to pull a model back. Source 0: the
 * model as trained now (what COMMIT would write, CRC resealed); 1: the active
 * stored generation. The reply carries the blob's length and a version (0: the
 * training state, which every TRAIN, CONFIG, RESET and LOAD changes; 1: the
 * generation number): a host reading in chunks restarts when it changes. */
int kl_sess_cmd_read(kl_session_t *s, const uint8_t *p, uint32_t n, uint8_t *out)
{
	if (n != 7u || p[0] > 1u) {
		return KL_EINVAL;
	}
	const uint32_t off = kl_rd32(p + 1);
	uint32_t want = kl_rd16(p + 5);
	const uint32_t room = KL_SESSION_MAX_PAYLOAD - 4u - 8u;
	want = want < room ? want : room;
	uint32_t len, version;
	const uint8_t *blob;
	if (p[0] == 0u) {
		if (!s->loaded || !s->slots.have_pin) {
			return KL_ENOMODEL;
		}
		blob = pinned_blob(s, &len);
		version = s->state_seq;
		if (!s->read_crc_ok || s->read_crc_seq != version) {
			s->read_crc = composed_crc(s, blob, len); /* once per training state */
			s->read_crc_seq = version;
			s->read_crc_ok = 1;
		}
	} else {
		blob = kl_slots_active(&s->slots, &len);
		if (blob == NULL) {
			return s->slots.have_active ? KL_ENOTSUP : KL_ENOMODEL;
		}
		version = (uint32_t)s->slots.active.seq;
	}
	if (off > len) {
		return KL_EINVAL;
	}
	const uint32_t k = len - off < want ? len - off : want;
	kl_wr32(out, len);
	kl_wr32(out + 4, version);
	if (p[0] == 0u) {
		compose_sealed(s, blob, off, out + 8, k, s->read_crc);
	} else {
		memcpy(out + 8, blob + off, k);
	}
	return (int)(8u + k);
}
