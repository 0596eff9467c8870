/* The session core: frames in, engine work, frames out. docs/protocol.md is
 * the specification. */
#include <string.h>

#include "kilolearn/kl_blob.h"
#include "kilolearn/kl_session.h"

static uint16_t rd16(const uint8_t *p)
{
	return (uint16_t)(p[0] | (p[1] << 8));
}

static uint32_t rd32(const uint8_t *p)
{
	return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) |
	       ((uint32_t)p[3] << 24);
}

static void wr16(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
}

static void wr32(uint8_t *p, uint32_t v)
{
	wr16(p, v);
	wr16(p + 2, v >> 16);
}

/* ---- replies -------------------------------------------------------------------- */

/* the reply payload is built in s->reply after the header, status first */
static uint8_t *reply_payload(kl_session_t *s)
{
	return s->reply + KL_FRAME_HEADER;
}

static void send_raw(kl_session_t *s, uint8_t *f, uint8_t type, uint16_t seq, size_t len)
{
	f[0] = type;
	f[1] = KL_PROTO_VERSION;
	wr16(f + 2, seq);
	wr16(f + 4, (uint32_t)len);
	wr32(f + KL_FRAME_HEADER + len, kl_crc32(0, f, KL_FRAME_HEADER + len));
	const size_t n = kl_cobs_encode(f, KL_FRAME_HEADER + len + KL_FRAME_CRC, s->wire,
					sizeof(s->wire) - 1u);
	s->wire[n] = 0;
	s->cfg.tx(s->cfg.tx_ctx, s->wire, n + 1u);
}

static void send_frame(kl_session_t *s, uint8_t type, uint16_t seq, size_t len)
{
	send_raw(s, s->reply, type, seq, len);
}

/* NAKs have their own buffer: the cached last reply survives them */
static void nak(kl_session_t *s, int status, uint16_t seq)
{
	uint8_t f[KL_FRAME_HEADER + 4u + KL_FRAME_CRC];
	wr32(f + KL_FRAME_HEADER, (uint32_t)status);
	send_raw(s, f, KL_CMD_NAK, seq, 4u);
}

/* ---- model lifecycle ------------------------------------------------------------ */

static uint32_t sample_bytes(const kl_session_t *s)
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

static void defaults(kl_session_settings_t *c)
{
	memset(c, 0, sizeof(*c));
	c->lr = 0.05f;
	c->cut = 0xFFFFu;
	c->seed = 1u;
	c->upd_policy = 0xFFu;
	c->upd_permille = KL_UPDATE_FRAC_ONE;
	c->auto_classes = 1;
}

/* Build the model from blob with the settings in force (the arena anew). */
static int build_model(kl_session_t *s, const uint8_t *blob, uint32_t len)
{
	const kl_session_settings_t *c = &s->set;
	s->loaded = 0;
	kl_arena_init(&s->arena, s->cfg.arena, s->cfg.arena_size);
	const kl_train_cfg_t tc = {.lr = c->lr, .momentum = 0.0f, .seed = c->seed, .flags = 0u};
	int err = kl_model_init(&s->model, blob, len, &s->arena, &tc);
	if (err != KL_OK) {
		return err;
	}
	if (s->model.n_classes > sizeof(c->class_mask)) {
		return KL_ENOTSUP;
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
		if (err == KL_OK) {
			err = kl_replay_init(&s->replay, &s->arena, c->replay_cap,
					     latent_bytes(&s->model, c->cut), s->model.n_classes,
					     c->seed ^ 0x9E3779B9u);
		}
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
	s->state_seq++;
	s->loaded = 1;
	return KL_OK;
}

/* (Re)start the model from the active generation; it is pinned while it runs
 * (its frozen weights are read in place from that slot). */
static int start_model(kl_session_t *s)
{
	s->loaded = 0;
	kl_slots_pin(&s->slots, 0);
	uint32_t len;
	const uint8_t *blob = kl_slots_active(&s->slots, &len);
	if (blob == NULL) {
		return s->slots.have_active ? KL_ENOTSUP : KL_ENOMODEL; /* not memory-mapped */
	}
	const int err = build_model(s, blob, len);
	if (err == KL_OK) {
		kl_slots_pin(&s->slots, 1);
	}
	return err;
}

/* after a failed or dropped LOAD: the committed model runs again if it had
 * been stopped to make room */
static void resume_model(kl_session_t *s)
{
	if (!s->loaded && s->slots.have_active) {
		(void)start_model(s);
	}
}

/* Would these settings fit the running model? The layout CONFIG would make
 * (update policy scratch, replay buffer) tried on copies of the model and the
 * arena as kl_model_init left them: nothing written, nothing changed. */
static int settings_fit(const kl_session_t *s, const kl_session_settings_t *c)
{
	if (!s->loaded) { /* nothing to lay out against: the arena bounds what fits */
		return c->cut != 0xFFFFu && c->replay_cap > s->cfg.arena_size ? KL_ENOMEM : KL_OK;
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
		if (err == KL_OK) {
			kl_replay_t r;
			err = kl_replay_reserve(&r, &a, c->replay_cap, latent_bytes(&m, c->cut),
						m.n_classes);
		}
	}
	return err;
}

static int session_blob_check(const uint8_t *blob, size_t len)
{
	return ((uintptr_t)blob & 3u) != 0u ? KL_EINVAL : kl_blob_check(blob, len);
}

int kl_session_init(kl_session_t *s, const kl_session_cfg_t *cfg)
{
	if (s == NULL || cfg == NULL || cfg->tx == NULL || cfg->store == NULL ||
	    cfg->arena == NULL) {
		return KL_EINVAL;
	}
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	defaults(&s->set);
	/* a generation counts only if the engine accepts it: a CRC-valid blob it
	 * refuses is passed over for the newest one it can run */
	const int err = kl_slots_mount_checked(&s->slots, cfg->store, session_blob_check);
	if (err != KL_OK) {
		return err;
	}
	if (s->slots.have_active) {
		(void)start_model(s); /* boot with the newest committed generation */
	}
	return KL_OK;
}

static uint64_t now(const kl_session_t *s)
{
	return s->cfg.insn != NULL ? s->cfg.insn() : 0u;
}

/* ---- commands -------------------------------------------------------------------- */

/* each handler fills the reply payload after the status and returns its
 * length (>= 0), or a negative status */

static int cmd_info(kl_session_t *s, uint8_t *out)
{
	wr16(out, KL_PROTO_VERSION);
	wr16(out + 2, KL_SESSION_MAX_PAYLOAD);
	wr16(out + 4, 1u); /* window: one frame in flight */
	out[6] = (uint8_t)s->loaded;
	out[7] = s->loaded ? s->model.dtype : 0xFFu;
	wr16(out + 8, s->loaded ? s->model.n_inputs : 0u);
	wr16(out + 10, s->loaded ? s->model.n_classes : 0u);
	wr16(out + 12, s->set.cut);
	wr32(out + 14, s->set.replay_cap);
	wr32(out + 18, (uint32_t)s->cfg.arena_size);
	wr32(out + 22, s->cfg.store->size);
	return 26;
}

/* a LOAD that failed or was dropped: the writer stops, the old model stays */
static int load_failed(kl_session_t *s, int err)
{
	s->loading = 0;
	kl_slots_abort(&s->slots);
	resume_model(s);
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
	defaults(&s->set); /* a new model starts from the default settings */
	err = build_model(s, blob, len);
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
	return KL_OK;
}

static int cmd_load(kl_session_t *s, const uint8_t *p, uint32_t n)
{
	if (n < 5u) {
		return KL_EINVAL;
	}
	const uint32_t v = rd32(p + 1);
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

static int check_sample(const kl_session_t *s, uint32_t n, int with_label)
{
	if (!s->loaded) {
		return KL_ENOMODEL;
	}
	return n == sample_bytes(s) + (with_label ? 2u : 0u) ? KL_OK : KL_EINVAL;
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

static int cmd_train(kl_session_t *s, uint8_t *p, uint32_t n, uint8_t *out)
{
	int err = check_sample(s, n, 1);
	if (err != KL_OK) {
		return err;
	}
	const int label = rd16(p);
	if (label >= s->model.n_classes) {
		return KL_EINVAL;
	}
	const void *x = aligned_sample(p + 2, n - 2u);
	if (s->set.auto_classes) {
		s->set.class_mask[label] = 1;
	}
	const uint64_t t0 = now(s);
	s->state_seq++; /* the weights change from here on, even if the step fails */
	const int pred = kl_train_step(&s->model, x, label);
	if (pred < 0) {
		return pred;
	}
	s->train_steps++;
	uint32_t replayed = 0;
	if (s->set.cut != 0xFFFFu) {
		kl_replay_add(&s->replay, s->model.tensors[s->set.cut].data, label);
		for (uint32_t r = 0; r < s->set.replay_ratio; r++) {
			const int slot = kl_replay_pick(&s->replay);
			if (slot < 0) {
				break;
			}
			err = kl_train_step_from(&s->model, s->set.cut,
						 kl_replay_latent(&s->replay, slot),
						 s->replay.labels[slot]);
			if (err < 0) {
				return err;
			}
			replayed++;
		}
		s->replay_steps += replayed;
	}
	s->train_insn += now(s) - t0;
	wr16(out, (uint32_t)pred);
	wr16(out + 2, replayed);
	return 4;
}

static int cmd_eval(kl_session_t *s, uint8_t *p, uint32_t n, uint8_t *out, int predict)
{
	const int err = check_sample(s, n, !predict);
	if (err != KL_OK) {
		return err;
	}
	const int label = predict ? -1 : (int)rd16(p);
	const int pred = kl_predict(&s->model, aligned_sample(predict ? p : p + 2,
								n - (predict ? 0u : 2u)));
	if (pred < 0) {
		return pred;
	}
	wr16(out, (uint32_t)pred);
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

/* sectors whose wear fits in a STATS reply */
#define KL_STATS_MAX_SECTORS ((KL_SESSION_MAX_PAYLOAD - 4u - 58u) / 8u)

static int cmd_stats(kl_session_t *s, uint8_t *out)
{
	uint32_t active = 0;
	for (uint32_t c = 0; c < sizeof(s->set.class_mask); c++) {
		active += s->set.class_mask[c] != 0u;
	}
	wr32(out, s->train_steps);
	wr32(out + 4, s->replay_steps);
	wr32(out + 8, (uint32_t)s->train_insn);
	wr32(out + 12, (uint32_t)(s->train_insn >> 32));
	wr32(out + 16, (uint32_t)s->arena.used);
	wr32(out + 20, (uint32_t)s->arena.peak);
	wr32(out + 24, s->set.cut != 0xFFFFu && s->loaded ? s->replay.count : 0u);
	const kl_store_t *st = s->cfg.store;
	wr32(out + 28, st->bytes_written);
	wr32(out + 32, st->erases);
	wr16(out + 36, active);
	/* the store: active generation, geometry, wear per sector */
	wr32(out + 38, s->slots.have_active ? (uint32_t)s->slots.active.seq : 0u); /* low half */
	wr32(out + 42, s->slots.have_active ? s->slots.active.off : 0xFFFFFFFFu);
	wr32(out + 46, st->geom.erase_block);
	wr16(out + 50, st->geom.write_block);
	out[52] = st->geom.erase_value;
	out[53] = (uint8_t)((st->base != NULL ? 1u : 0u) |
			    (st->sector_erases != NULL && st->sector_bytes != NULL ? 2u : 0u));
	const uint32_t n_sec = kl_store_sectors(st);
	uint32_t k = (out[53] & 2u) ? n_sec : 0u;
	if (k > KL_STATS_MAX_SECTORS) {
		k = KL_STATS_MAX_SECTORS;
	}
	wr16(out + 54, n_sec > 0xFFFFu ? 0xFFFFu : n_sec);
	wr16(out + 56, k);
	for (uint32_t i = 0; i < k; i++) {
		wr32(out + 58 + 8u * i, st->sector_erases[i]);
		wr32(out + 62 + 8u * i, st->sector_bytes[i]);
	}
	return (int)(58u + 8u * k);
}

/* CONFIG: every item parsed and checked into a copy of the settings, the
 * whole against the running model (settings_fit), and only then applied: a
 * refused CONFIG changes nothing, not even the items before the bad one. */
static int cmd_config(kl_session_t *s, const uint8_t *p, uint32_t n)
{
	if (s->loading) {
		return KL_ESTATE; /* finish (or drop) the LOAD first */
	}
	kl_session_settings_t c = s->set;
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
			f.u = rd32(v);
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
			c.replay_ratio = rd16(v);
			break;
		case KL_CFG_REPLAY_CAP:
			if (len != 4u) {
				return KL_EINVAL;
			}
			c.replay_cap = rd32(v);
			break;
		case KL_CFG_CUT:
			if (len != 2u) {
				return KL_EINVAL;
			}
			c.cut = rd16(v);
			break;
		case KL_CFG_SEED:
			if (len != 4u) {
				return KL_EINVAL;
			}
			c.seed = rd32(v);
			break;
		case KL_CFG_UPDATE:
			if (len != 3u || (v[0] >= KL_UPDATE_POLICY_COUNT && v[0] != 0xFFu) ||
			    rd16(v + 1) == 0u || rd16(v + 1) > KL_UPDATE_FRAC_ONE) {
				return KL_EINVAL;
			}
			c.upd_policy = v[0];
			c.upd_permille = rd16(v + 1);
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
	const int started = start_model(s);
	if (started != KL_OK) { /* not foreseen by settings_fit: back to the old ones */
		s->set = old;
		(void)start_model(s);
	}
	return started;
}

/* The blob with the trained parameters: bytes [off, off+n) of the blob the
 * model was started from (read in place), the arena's trainable tensors
 * laid over it, and (int8) the activation exponents that training grew. */
static void compose(const kl_session_t *s, const uint8_t *blob, uint32_t off, uint8_t *buf,
		    uint32_t n)
{
	memcpy(buf, blob + off, n);
	if (s->model.dtype == KL_DTYPE_S8) {
		const uint32_t tens = rd32(blob + KL_BH_TENSORS);
		for (uint32_t t = 0; t < s->model.n_tensors; t++) {
			const uint32_t at = tens + t * KL_BLOB_TENSOR_SIZE + KL_BT_EXP;
			if (at >= off && at < off + n) {
				buf[at - off] = (uint8_t)s->model.tensors[t].exp;
			}
		}
	}
	const uint32_t ops = rd32(blob + KL_BH_OPS);
	const uint32_t es = s->model.dtype == KL_DTYPE_S8 ? 1u : 4u;
	for (int i = 0; i < s->model.n_ops; i++) {
		const kl_op_t *op = &s->model.ops[i];
		if (!(op->flags & KL_OP_TRAINABLE) || op->n_w == 0u) {
			continue;
		}
		const uint8_t *r = blob + ops + (uint32_t)i * KL_BLOB_OP_SIZE;
		const uint32_t t_off[2] = {rd32(r + KL_BO_W_OFF), rd32(r + KL_BO_B_OFF)};
		const uint32_t t_len[2] = {op->n_w * es, rd32(r + KL_BO_B_SIZE)};
		const uint8_t *src[2] = {(const uint8_t *)op->w, (const uint8_t *)op->b};
		for (int t = 0; t < 2; t++) {
			const uint32_t lo = t_off[t] > off ? t_off[t] : off;
			const uint32_t hi_t = t_off[t] + t_len[t], hi_c = off + n;
			const uint32_t hi = hi_t < hi_c ? hi_t : hi_c;
			if (lo < hi) {
				memcpy(buf + (lo - off), src[t] + (lo - t_off[t]), hi - lo);
			}
		}
	}
}

/* The blob as trained: its own CRC (over [KL_BLOB_CRC_START, len)) recomputed
 * over the composed bytes. */
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
static int cmd_commit(kl_session_t *s)
{
	if (!s->loaded || !s->slots.have_pin) {
		return KL_ENOMODEL;
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
		err = fresh != NULL ? session_blob_check(fresh, n) : KL_ENOTSUP;
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
static int cmd_read(kl_session_t *s, const uint8_t *p, uint32_t n, uint8_t *out)
{
	if (n != 7u || p[0] > 1u) {
		return KL_EINVAL;
	}
	const uint32_t off = rd32(p + 1);
	uint32_t want = rd16(p + 5);
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
	wr32(out, len);
	wr32(out + 4, version);
	if (p[0] == 0u) {
		compose_sealed(s, blob, off, out + 8, k, s->read_crc);
	} else {
		memcpy(out + 8, blob + off, k);
	}
	return (int)(8u + k);
}

static int dispatch(kl_session_t *s, uint8_t type, uint8_t *p, uint32_t n, uint8_t *out)
{
	switch (type) {
	case KL_CMD_INFO:
		return cmd_info(s, out);
	case KL_CMD_LOAD:
		return cmd_load(s, p, n);
	case KL_CMD_TRAIN:
		return cmd_train(s, p, n, out);
	case KL_CMD_EVAL:
		return cmd_eval(s, p, n, out, 0);
	case KL_CMD_PREDICT:
		return cmd_eval(s, p, n, out, 1);
	case KL_CMD_COMMIT:
		return cmd_commit(s);
	case KL_CMD_STATS:
		return cmd_stats(s, out);
	case KL_CMD_CONFIG:
		return cmd_config(s, p, n);
	case KL_CMD_RESET:
		if (!s->slots.have_active || s->loading) {
			return KL_ENOMODEL;
		}
		return start_model(s);
	case KL_CMD_READ:
		return cmd_read(s, p, n, out);
	default:
		return KL_ENOTSUP;
	}
}

static void handle_frame(kl_session_t *s, const uint8_t *wire, size_t n)
{
	uint8_t *f = (uint8_t *)s->frame;
	const size_t len = kl_cobs_decode(wire, n, f, KL_FRAME_MAX); /* not the rounded-up buffer */
	if (len < KL_FRAME_HEADER + KL_FRAME_CRC) {
		nak(s, KL_EFRAME, 0);
		return;
	}
	const uint16_t seq = rd16(f + 2);
	const uint32_t plen = rd16(f + 4);
	if (plen > KL_SESSION_MAX_PAYLOAD || plen != len - KL_FRAME_HEADER - KL_FRAME_CRC ||
	    kl_crc32(0, f, KL_FRAME_HEADER + plen) != rd32(f + KL_FRAME_HEADER + plen)) {
		nak(s, KL_EFRAME, seq);
		return;
	}
	if (f[1] != KL_PROTO_VERSION) {
		nak(s, KL_EVERSION, seq);
		return;
	}
	const uint8_t type = f[0];
	if (type >= (KL_CMD_NAK & ~KL_CMD_REPLY)) {
		/* reply and NAK types are never requests, nor 0x7F (its reply type
		 * would be the NAK's): a NAK (not executed, no sequence number
		 * used), so that no reply can look like one */
		nak(s, KL_ENOTSUP, seq);
		return;
	}
	const int resync = type == KL_CMD_INFO;
	if (!resync) {
		if (s->have_seq && seq == s->last_seq && s->reply_len != 0u &&
		    s->reply_type == (type | KL_CMD_REPLY)) {
			/* a retransmission: the same reply again, no second execution */
			send_frame(s, s->reply_type, seq, s->reply_len);
			return;
		}
		if (!s->have_seq || seq != (uint16_t)(s->last_seq + 1u)) {
			nak(s, KL_ESEQ, seq);
			return;
		}
	}
	s->have_seq = 1;
	s->last_seq = seq;
	uint8_t *out = reply_payload(s);
	const int r = dispatch(s, type, f + KL_FRAME_HEADER, plen, out + 4);
	const size_t rlen = r >= 0 ? 4u + (size_t)r : 4u;
	wr32(out, (uint32_t)(r >= 0 ? KL_OK : r));
	s->reply_type = (uint8_t)(type | KL_CMD_REPLY);
	s->reply_len = rlen;
	send_frame(s, s->reply_type, seq, rlen);
}

void kl_session_feed(kl_session_t *s, const uint8_t *bytes, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const uint8_t b = bytes[i];
		if (b == 0u) {
			if (s->rx_overflow) {
				nak(s, KL_EFRAME, 0);
			} else if (s->rx_len > 0u) {
				handle_frame(s, s->rx, s->rx_len);
			}
			s->rx_len = 0;
			s->rx_overflow = 0;
		} else if (s->rx_len < sizeof(s->rx)) {
			s->rx[s->rx_len++] = b;
		} else {
			s->rx_overflow = 1;
		}
	}
}
