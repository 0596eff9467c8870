/* The session's model: built from the stored blob with the settings in force,
 * LOAD (checked and started before it becomes active), CONFIG (checked whole,
 * then applied), INFO. */
#include <string.h>

#include "kl_session_priv.h"

uint32_t kl_sess_sample_bytes(const kl_session_t *s)
{
	return (uint32_t)s->model.n_inputs * (s->model.dtype == KL_DTYPE_S8 ? 1u : 4u);
}

static uint32_t latent_bytes(const kl_model_t *m, uint16_t cut)
{
	const kl_tensor_t *t = &m->tensors[cut];
	return (uint32_t)t->h * t->w * t->c * (m->dtype == KL_DTYPE_S8 ? 1u : 4u);
}

/* a replay cut the model allows: in range, the backbone before it frozen, and
 * the model laid out store-all (its activations stay where replay reads them) */
static int cut_ok(const kl_model_t *m, uint16_t cut)
{
	if (m->sched != NULL) {
		return KL_ENOTSUP; /* a planned model frees the cut's activations: no replay */
	}
	const int err = kl_model_check_cut(m, cut);
	if (err != KL_OK) {
		return err;
	}
	return m->tensors[cut].need_grad ? KL_EINVAL : KL_OK;
}

void kl_sess_defaults(kl_session_settings_t *c)
{
	memset(c, 0, sizeof(*c));
	c->lr = 0.05f;
	c->cut = 0xFFFFu;
	c->seed = 1u;
	c->upd_policy = 0xFFu;
	c->upd_permille = KL_UPDATE_FRAC_ONE;
	c->auto_classes = 0;
	c->replay_where = KL_REPLAY_ARENA;
	c->replay_lines = KL_SESSION_REPLAY_LINES;
	memset(c->class_mask, 1, sizeof(c->class_mask)); /* every class of the model active */
}

uint32_t kl_sess_active_classes(const kl_session_t *s)
{
	uint32_t active = 0;
	for (uint32_t c = 0; s->loaded && c < s->model.n_classes; c++) {
		active += s->set.class_mask[c] != 0u;
	}
	return active;
}

/* A paged model running from the active generation: its weight log opened
 * and mounted (the committed rows come back). */
static int attach_log(kl_session_t *s)
{
	int err = kl_wlog_open_active(&s->wlog, s->cfg.log_store, &s->slots);
	return err == KL_OK ? kl_model_attach_wlog(&s->model, &s->wlog) : err;
}

/* Build the model from blob with the settings in force (the arena anew). A
 * paged model attaches its log when blob is the active generation (a LOAD
 * attaches it once its blob is committed). */
int kl_sess_build_model(kl_session_t *s, const uint8_t *blob, uint32_t len)
{
	const kl_session_settings_t *c = &s->set;
	s->loaded = 0;
	kl_arena_init(&s->arena, s->cfg.arena, s->cfg.arena_size);
	const kl_train_cfg_t tc = {.lr = c->lr, .momentum = 0.0f, .seed = c->seed, .flags = 0u};
	int err = kl_model_init(&s->model, blob, len, &s->arena, &tc);
	if (err != KL_OK) {
		return err;
	}
	if (s->model.n_classes > sizeof(c->class_mask) ||
	    (s->model.paged && s->cfg.log_store == NULL)) {
		return KL_ENOTSUP;
	}
	uint32_t alen;
	if (s->model.paged && kl_slots_active(&s->slots, &alen) == blob) {
		err = attach_log(s);
		if (err != KL_OK) {
			return err;
		}
	}
	s->init_used = s->arena.used;
	s->init_sel = s->model.sel;
	s->init_sel_size = s->model.sel_size;
	if (c->upd_policy != 0xFFu) { /* CONFIG's selective-update policy over the blob's */
		err = kl_model_set_update_policy(&s->model, c->upd_policy, c->upd_permille);
		if (err != KL_OK) {
			return err;
		}
	}
	if (c->cut != 0xFFFFu) {
		err = cut_ok(&s->model, c->cut);
		const uint32_t seed = c->seed ^ 0x9E3779B9u;
		if (err == KL_OK && c->replay_where != KL_REPLAY_ARENA) {
			err = kl_freplay_init(&s->freplay, &s->arena, s->cfg.replay_store,
					      c->replay_cap, latent_bytes(&s->model, c->cut),
					      s->model.n_classes, c->replay_lines, seed,
					      c->replay_where == KL_REPLAY_FLASH_RESUME);
		} else if (err == KL_OK) {
			err = kl_replay_init(&s->replay, &s->arena, c->replay_cap,
					     latent_bytes(&s->model, c->cut), s->model.n_classes,
					     seed);
		}
		if (err != KL_OK) {
			return err;
		}
	}
	if (c->buf_cap != 0u) {
		err = kl_samples_init(&s->samples, &s->arena, c->buf_cap, kl_sess_sample_bytes(s),
				      c->seed ^ 0x7F4A7C15u);
		if (err != KL_OK) {
			return err;
		}
	}
	s->model.class_mask = s->set.class_mask;
	if (c->auto_classes) {
		memset(s->set.class_mask, 0, sizeof(s->set.class_mask));
	}
	s->train_steps = s->replay_steps = 0;
	s->train_insn = 0;
	s->score_mean = s->score_var = 0.0f;
	s->score_n = 0;
	s->state_seq++;
	s->loaded = 1;
	return KL_OK;
}

/* (Re)start the model from the active generation; it is pinned while it runs
 * (its frozen weights are read in place from that slot). */
int kl_sess_start_model(kl_session_t *s)
{
	s->loaded = 0;
	kl_slots_pin(&s->slots, 0);
	uint32_t len;
	const uint8_t *blob = kl_slots_active(&s->slots, &len);
	if (blob == NULL) {
		return s->slots.have_active ? KL_ENOTSUP : KL_ENOMODEL; /* not memory-mapped */
	}
	const int err = kl_sess_build_model(s, blob, len);
	if (err == KL_OK) {
		kl_slots_pin(&s->slots, 1);
	}
	return err;
}

/* after a failed or dropped LOAD: the committed model runs again if it had
 * been stopped to make room */
void kl_sess_resume_model(kl_session_t *s)
{
	if (!s->loaded && s->slots.have_active) {
		(void)kl_sess_start_model(s);
	}
}

/* Would these settings fit the running model? The layout CONFIG would make
 * (update policy scratch, replay buffer) tried on copies of the model and the
 * arena as kl_model_init left them: nothing written, nothing changed. */
static int settings_fit(const kl_session_t *s, const kl_session_settings_t *c)
{
	if (c->buf_cap > KL_SAMPLES_MAX) {
		return KL_EINVAL;
	}
	if (c->replay_where != KL_REPLAY_ARENA && s->cfg.replay_store == NULL) {
		return KL_ENOTSUP; /* no replay store on this device */
	}
	if (!s->loaded) { /* nothing to lay out against: the arena bounds what fits */
		return (c->cut != 0xFFFFu && c->replay_where == KL_REPLAY_ARENA &&
			c->replay_cap > s->cfg.arena_size) ||
				       c->buf_cap > s->cfg.arena_size
			       ? KL_ENOMEM
			       : KL_OK;
	}
	kl_arena_t a = s->arena;
	a.used = s->init_used;
	kl_model_t m = s->model;
	m.arena = &a;
	m.sel = s->init_sel;
	m.sel_size = s->init_sel_size;
	int err = KL_OK;
	if (c->upd_policy != 0xFFu) {
		err = kl_model_set_update_policy(&m, c->upd_policy, c->upd_permille);
	}
	if (err == KL_OK && c->cut != 0xFFFFu) {
		err = cut_ok(&m, c->cut);
		if (err == KL_OK && c->replay_where != KL_REPLAY_ARENA) {
			kl_freplay_t f;
			err = kl_freplay_reserve(&f, &a, s->cfg.replay_store, c->replay_cap,
						 latent_bytes(&m, c->cut), m.n_classes,
						 c->replay_lines);
		} else if (err == KL_OK) {
			kl_replay_t r;
			err = kl_replay_reserve(&r, &a, c->replay_cap, latent_bytes(&m, c->cut),
						m.n_classes);
		}
	}
	if (err == KL_OK && c->buf_cap != 0u) {
		kl_samples_t b;
		err = kl_samples_reserve(&b, &a, c->buf_cap, kl_sess_sample_bytes(s));
	}
	return err;
}

int kl_sess_blob_check(const uint8_t *blob, size_t len)
{
	return ((uintptr_t)blob & 3u) != 0u ? KL_EINVAL : kl_blob_check(blob, len);
}

uint64_t kl_sess_now(const kl_session_t *s)
{
	return s->cfg.insn != NULL ? s->cfg.insn() : 0u;
}

int kl_sess_cmd_info(kl_session_t *s, uint8_t *out)
{
	/* the version of the request, and its window (version 1: one in flight) */
	kl_wr16(out, s->rx_version);
	kl_wr16(out + 2, KL_SESSION_MAX_PAYLOAD);
	kl_wr16(out + 4, s->rx_version == KL_PROTO_V1 ? 1u : s->window);
	out[6] = (uint8_t)s->loaded;
	out[7] = s->loaded ? s->model.dtype : 0xFFu;
	kl_wr16(out + 8, s->loaded ? s->model.n_inputs : 0u);
	kl_wr16(out + 10, s->loaded ? s->model.n_classes : 0u);
	kl_wr16(out + 12, s->set.cut);
	kl_wr32(out + 14, s->set.replay_cap);
	kl_wr32(out + 18, (uint32_t)s->cfg.arena_size);
	kl_wr32(out + 22, s->cfg.store->size);
	/* the configuration in force */
	union {
		float f;
		uint32_t u;
	} lr = {.f = s->set.lr};
	kl_wr32(out + 26, lr.u);
	kl_wr16(out + 30, s->set.replay_ratio);
	kl_wr32(out + 32, s->set.seed);
	out[36] = s->set.upd_policy;
	kl_wr16(out + 37, s->set.upd_permille);
	out[39] = s->set.auto_classes;
	kl_wr16(out + 40, kl_sess_active_classes(s));
	kl_wr32(out + 42, s->set.buf_cap);
	kl_wr32(out + 46, s->loaded && s->set.buf_cap != 0u ? s->samples.count : 0u);
	out[50] = s->set.replay_where;
	kl_wr16(out + 51, s->set.replay_lines);
	kl_wr32(out + 53, s->cfg.replay_store != NULL ? s->cfg.replay_store->size : 0u);
	return 57;
}

/* a LOAD that failed or was dropped: the writer stops, the old model stays */
static int load_failed(kl_session_t *s, int err)
{
	s->loading = 0;
	kl_slots_abort(&s->slots);
	kl_sess_resume_model(s);
	return err;
}

/* LOAD END: the new blob is checked in place, and a model built from it with
 * the default settings, before its slot header makes it the active
 * generation. A blob the engine refuses never becomes active: the old model
 * stays committed and running. */
static int load_end(kl_session_t *s, uint32_t crc)
{
	int err = kl_slots_finish(&s->slots, crc);
	if (err != KL_OK) {
		return load_failed(s, err);
	}
	uint32_t len;
	const uint8_t *blob = kl_slots_pending(&s->slots, &len);
	if (blob == NULL) {
		return load_failed(s, KL_ENOTSUP); /* the engine reads blobs in place */
	}
	const kl_session_settings_t old = s->set;
	kl_sess_defaults(&s->set); /* a new model starts from the default settings */
	err = kl_sess_build_model(s, blob, len);
	if (err == KL_OK) {
		err = kl_slots_commit(&s->slots);
	}
	if (err != KL_OK) {
		s->loaded = 0;
		s->set = old;
		return load_failed(s, err);
	}
	s->loading = 0;
	kl_slots_pin(&s->slots, 1); /* the new active slot */
	if (s->model.paged) { /* its log, now that its generation is the active one */
		err = attach_log(s);
		s->loaded = err == KL_OK;
	}
	return err;
}

int kl_sess_cmd_load(kl_session_t *s, const uint8_t *p, uint32_t n)
{
	if (n < 5u) {
		return KL_EINVAL;
	}
	const uint32_t v = kl_rd32(p + 1);
	switch (p[0]) {
	case KL_LOAD_BEGIN: {
		if (v < KL_BLOB_HEADER_SIZE || v > s->cfg.store->size) {
			return KL_ENOMEM;
		}
		/* the new blob goes to a free run of sectors; the active slot stays
		 * valid (and its model running) until END has checked the new one
		 * and programmed its header */
		s->loading = 0;
		int err = kl_slots_begin(&s->slots, v);
		if (err == KL_ENOSPC && s->slots.have_pin && s->slots.pin.off != s->slots.active.off) {
			/* the model runs from an older generation than the active one:
			 * its slot is the room; it restarts from the active one if the
			 * LOAD fails */
			s->loaded = 0;
			kl_slots_pin(&s->slots, 0);
			err = kl_slots_begin(&s->slots, v);
		}
		if (err != KL_OK) {
			return load_failed(s, err);
		}
		s->loading = 1;
		s->load_size = v;
		s->load_got = 0;
		return 0;
	}
	case KL_LOAD_DATA: {
		if (!s->loading) {
			return KL_ESTATE;
		}
		const uint32_t len = n - 5u;
		if (v != s->load_got || len > s->load_size - s->load_got) {
			return KL_EINVAL; /* chunks come in order, within the announced size */
		}
		const int err = kl_slots_write(&s->slots, p + 5, len);
		if (err != KL_OK) {
			return load_failed(s, err);
		}
		s->load_got += len;
		return 0;
	}
	case KL_LOAD_END:
		if (!s->loading || s->load_got != s->load_size) {
			return KL_ESTATE;
		}
		return load_end(s, v);
	default:
		return KL_EINVAL;
	}
}

/* CONFIG: the whole configuration (keys not given take their defaults):
 * every item parsed and checked into a fresh copy of the defaults, the whole
 * against the running model (settings_fit), and only then applied: a refused
 * CONFIG changes nothing, not even the items before the bad one. */
int kl_sess_cmd_config(kl_session_t *s, const uint8_t *p, uint32_t n)
{
	if (s->loading) {
		return KL_ESTATE; /* finish (or drop) the LOAD first */
	}
	kl_session_settings_t c;
	kl_sess_defaults(&c);
	uint32_t i = 0;
	while (i < n) {
		if (n - i < 2u || p[i + 1] > n - i - 2u) {
			return KL_EINVAL;
		}
		const uint8_t key = p[i], len = p[i + 1];
		const uint8_t *v = p + i + 2;
		switch (key) {
		case KL_CFG_LR: {
			if (len != 4u) {
				return KL_EINVAL;
			}
			union {
				uint32_t u;
				float f;
			} f;
			f.u = kl_rd32(v);
			if (!(f.f >= 0.0f && f.f <= 1.0f)) {
				return KL_EINVAL;
			}
			c.lr = f.f;
			break;
		}
		case KL_CFG_REPLAY_RATIO:
			if (len != 2u) {
				return KL_EINVAL;
			}
			c.replay_ratio = kl_rd16(v);
			if (c.replay_ratio > KL_SESSION_MAX_REPLAY_RATIO) {
				return KL_EINVAL; /* each replayed latent is a training step */
			}
			break;
		case KL_CFG_REPLAY_CAP:
			if (len != 4u) {
				return KL_EINVAL;
			}
			c.replay_cap = kl_rd32(v);
			break;
		case KL_CFG_CUT:
			if (len != 2u) {
				return KL_EINVAL;
			}
			c.cut = kl_rd16(v);
			break;
		case KL_CFG_SEED:
			if (len != 4u) {
				return KL_EINVAL;
			}
			c.seed = kl_rd32(v);
			break;
		case KL_CFG_UPDATE:
			if (len != 3u || (v[0] >= KL_UPDATE_POLICY_COUNT && v[0] != 0xFFu) ||
			    kl_rd16(v + 1) == 0u || kl_rd16(v + 1) > KL_UPDATE_FRAC_ONE) {
				return KL_EINVAL;
			}
			c.upd_policy = v[0];
			c.upd_permille = kl_rd16(v + 1);
			break;
		case KL_CFG_BUFFER:
			if (len != 4u) {
				return KL_EINVAL;
			}
			c.buf_cap = kl_rd32(v);
			break;
		case KL_CFG_REPLAY_WHERE:
			if ((len != 1u && len != 3u) || v[0] > KL_REPLAY_FLASH_RESUME ||
			    (len == 3u && kl_rd16(v + 1) == 0u)) {
				return KL_EINVAL;
			}
			c.replay_where = v[0];
			c.replay_lines = len == 3u ? (uint16_t)kl_rd16(v + 1) : KL_SESSION_REPLAY_LINES;
			break;
		case KL_CFG_CLASSES: /* len <= 255 < sizeof(class_mask) */
			c.auto_classes = len == 0u;
			memset(c.class_mask, 0, sizeof(c.class_mask));
			memcpy(c.class_mask, v, len);
			break;
		default:
			return KL_EINVAL;
		}
		i += 2u + len;
	}
	const int err = settings_fit(s, &c);
	if (err != KL_OK) {
		return err;
	}
	const kl_session_settings_t old = s->set;
	s->set = c;
	if (!s->slots.have_active) {
		return 0;
	}
	/* settings take effect on a fresh training state */
	const int started = kl_sess_start_model(s);
	if (started != KL_OK) { /* not foreseen by settings_fit: back to the old ones */
		s->set = old;
		(void)kl_sess_start_model(s);
	}
	return started;
}
