/* The session core's frames: COBS and CRC in, sequencing, dispatch to the
 * commands, replies out. docs/protocol.md is the specification; the commands
 * are kl_session_model.c (model lifecycle, LOAD, CONFIG, INFO) and
 * kl_session_cmds.c (TRAIN, EVAL, PREDICT, STATS, COMMIT, READ). */
#include <string.h>

#include "kl_session_priv.h"

/* ---- the window ------------------------------------------------------------------ */

enum { SLOT_EMPTY = 0, SLOT_REPLY = 1, SLOT_HELD = 2 };

/* slot i of the window: a cached reply (header, payload; the CRC space after)
 * or a held request, as decoded */
static uint8_t *slot(kl_session_t *s, unsigned i)
{
	return i == 0u ? s->reply : s->win + (size_t)(i - 1u) * KL_FRAME_MAX;
}

static unsigned slot_of(const kl_session_t *s, uint16_t seq)
{
	return (unsigned)seq % s->window;
}

static void clear_window(kl_session_t *s)
{
	memset(s->slot_state, SLOT_EMPTY, sizeof(s->slot_state));
}

unsigned kl_session_window(kl_session_t *s, uint8_t *mem, size_t size)
{
	const size_t extra = mem == NULL ? 0u : size / KL_FRAME_MAX;
	s->window = (uint16_t)(extra + 1u < KL_SESSION_MAX_WINDOW ? extra + 1u
								   : KL_SESSION_MAX_WINDOW);
	s->win = mem;
	s->have_seq = 0; /* the host starts again with INFO */
	clear_window(s);
	return s->window;
}

/* ---- frames out --------------------------------------------------------------------- */

static void send_raw(kl_session_t *s, uint8_t *f, uint8_t type, uint8_t ver, uint16_t seq,
		     size_t len)
{
	f[0] = type;
	f[1] = ver;
	kl_wr16(f + 2, seq);
	kl_wr16(f + 4, (uint32_t)len);
	kl_wr32(f + KL_FRAME_HEADER + len, kl_crc32(0, f, KL_FRAME_HEADER + len));
	const size_t n = kl_cobs_encode(f, KL_FRAME_HEADER + len + KL_FRAME_CRC, s->wire,
					sizeof(s->wire) - 1u);
	s->wire[n] = 0;
	s->cfg.tx(s->cfg.tx_ctx, s->wire, n + 1u);
}

/* NAKs (version 1: any host reads them) and ACKs have their own buffer: the
 * cached replies survive them */
static void nak(kl_session_t *s, int status, uint16_t seq)
{
	uint8_t f[KL_FRAME_HEADER + 4u + KL_FRAME_CRC];
	kl_wr32(f + KL_FRAME_HEADER, (uint32_t)status);
	send_raw(s, f, KL_CMD_NAK, KL_PROTO_V1, seq, 4u);
}

/* ACK (version 2): seq = the last request executed; payload: status 0, the
 * request just held (u16), and every request held (u32: bit k = last + 1 + k) */
static void ack(kl_session_t *s, uint16_t held)
{
	uint8_t f[KL_FRAME_HEADER + 10u + KL_FRAME_CRC];
	uint32_t map = 0;
	for (uint32_t k = 2u; k <= s->window && k < 32u; k++) {
		const uint16_t q = (uint16_t)(s->last_seq + k);
		const unsigned i = (unsigned)q % s->window;
		if (s->slot_state[i] == SLOT_HELD && kl_rd16(slot(s, i) + 2) == q) {
			map |= 1u << (k - 1u);
		}
	}
	kl_wr32(f + KL_FRAME_HEADER, (uint32_t)KL_OK);
	kl_wr16(f + KL_FRAME_HEADER + 4u, held);
	kl_wr32(f + KL_FRAME_HEADER + 6u, map);
	send_raw(s, f, KL_CMD_ACK, KL_PROTO_VERSION, s->last_seq, 10u);
}

/* the cached reply of slot i again (its header says type, version, seq) */
static void resend(kl_session_t *s, unsigned i)
{
	uint8_t *f = slot(s, i);
	send_raw(s, f, f[0], f[1], kl_rd16(f + 2), kl_rd16(f + 4));
}

int kl_session_init(kl_session_t *s, const kl_session_cfg_t *cfg)
{
	if (s == NULL || cfg == NULL || cfg->tx == NULL || cfg->store == NULL ||
	    cfg->arena == NULL) {
		return KL_EINVAL;
	}
	memset(s, 0, sizeof(*s));
	s->cfg = *cfg;
	kl_sess_defaults(&s->set);
	s->window = 1u;
	s->max_version = KL_PROTO_VERSION;
	/* a generation counts only if the engine accepts it: a CRC-valid blob it
	 * refuses is passed over for the newest one it can run */
	const int err = kl_slots_mount_checked(&s->slots, cfg->store, kl_sess_blob_check);
	if (err != KL_OK) {
		return err;
	}
	if (s->slots.have_active) {
		(void)kl_sess_start_model(s); /* boot with the newest committed generation */
	}
	return KL_OK;
}

static int dispatch(kl_session_t *s, uint8_t type, uint8_t *p, uint32_t n, uint8_t *out)
{
	switch (type) {
	case KL_CMD_INFO:
		return kl_sess_cmd_info(s, out);
	case KL_CMD_LOAD:
		return kl_sess_cmd_load(s, p, n);
	case KL_CMD_TRAIN:
		return kl_sess_cmd_train(s, p, n, out);
	case KL_CMD_EVAL:
		return kl_sess_cmd_eval(s, p, n, out, 0);
	case KL_CMD_PREDICT:
		return kl_sess_cmd_eval(s, p, n, out, 1);
	case KL_CMD_COMMIT:
		return kl_sess_cmd_commit(s);
	case KL_CMD_STATS:
		return kl_sess_cmd_stats(s, out);
	case KL_CMD_CONFIG:
		return kl_sess_cmd_config(s, p, n);
	case KL_CMD_RESET:
		if (!s->slots.have_active || s->loading) {
			return KL_ENOMODEL;
		}
		if (s->loaded && s->model.paged && s->model.wlog != NULL) {
			const int err = kl_model_discard_log(&s->model); /* its steps are logged */
			if (err != KL_OK) {
				return err;
			}
		}
		return kl_sess_start_model(s);
	case KL_CMD_READ:
		return kl_sess_cmd_read(s, p, n, out);
	case KL_CMD_EPOCHS:
		return kl_sess_cmd_epochs(s, p, n, out);
	default:
		return KL_ENOTSUP;
	}
}

/* Execute the request decoded in s->frame (in sequence) and send its reply,
 * cached in its window slot. */
static void execute(kl_session_t *s, uint16_t seq)
{
	const uint8_t *f = (const uint8_t *)s->frame;
	const uint8_t type = f[0];
	const uint32_t plen = kl_rd16(f + 4);
	s->rx_version = f[1];
	s->have_seq = 1;
	s->last_seq = seq;
	const unsigned i = slot_of(s, seq);
	uint8_t *r = slot(s, i);
	s->slot_state[i] = SLOT_EMPTY; /* the reply it held is no longer asked for */
	uint8_t *out = r + KL_FRAME_HEADER;
	const int st = dispatch(s, type, (uint8_t *)s->frame + KL_FRAME_HEADER, plen, out + 4);
	const size_t rlen = st >= 0 ? 4u + (size_t)st : 4u;
	kl_wr32(out, (uint32_t)(st >= 0 ? KL_OK : st));
	s->slot_state[i] = SLOT_REPLY;
	send_raw(s, r, (uint8_t)(type | KL_CMD_REPLY), s->rx_version, seq, rlen);
}

/* Held requests whose turn has come, in order. */
static void run_held(kl_session_t *s)
{
	for (;;) {
		const uint16_t next = (uint16_t)(s->last_seq + 1u);
		const unsigned i = slot_of(s, next);
		const uint8_t *h = slot(s, i);
		if (s->slot_state[i] != SLOT_HELD || kl_rd16(h + 2) != next) {
			return;
		}
		memcpy(s->frame, h, KL_FRAME_HEADER + (size_t)kl_rd16(h + 4));
		execute(s, next);
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
	const uint16_t seq = kl_rd16(f + 2);
	const uint32_t plen = kl_rd16(f + 4);
	if (plen > KL_SESSION_MAX_PAYLOAD || plen != len - KL_FRAME_HEADER - KL_FRAME_CRC ||
	    kl_crc32(0, f, KL_FRAME_HEADER + plen) != kl_rd32(f + KL_FRAME_HEADER + plen)) {
		nak(s, KL_EFRAME, seq);
		return;
	}
	const uint8_t ver = f[1];
	if (ver < KL_PROTO_V1 || ver > s->max_version) {
		nak(s, KL_EVERSION, seq);
		return;
	}
	const uint8_t type = f[0];
	/* reply, ACK and NAK types are never requests, nor the request types
	 * whose reply type would be the NAK's (0x7F) or, in version 2, the ACK's
	 * (0x7E): a NAK (not executed, no sequence number used), so that no reply
	 * can look like one */
	if (type >= (ver == KL_PROTO_V1 ? (KL_CMD_NAK & ~KL_CMD_REPLY)
					 : (KL_CMD_ACK & ~KL_CMD_REPLY))) {
		nak(s, KL_ENOTSUP, seq);
		return;
	}
	/* version 1: a window of one, whatever the device offers */
	const uint16_t w = ver == KL_PROTO_V1 ? 1u : s->window;
	const uint16_t behind = (uint16_t)(s->last_seq - seq);  /* 0: the last executed */
	const uint16_t ahead = (uint16_t)(seq - s->last_seq);   /* 1: the next */
	if (type == KL_CMD_INFO) {
		/* (re)starts the sequence at seq, the window empty; in version 2 an
		 * INFO with the nonce (u32 payload) of the INFO that started the
		 * sequence is that INFO again (a late duplicate): its reply again */
		const uint32_t nonce = plen == 4u ? kl_rd32(f + KL_FRAME_HEADER) : 0u;
		const unsigned i = slot_of(s, seq);
		if (ver != KL_PROTO_V1 && plen == 4u && s->have_nonce && nonce == s->info_nonce &&
		    s->have_seq && behind < w && s->slot_state[i] == SLOT_REPLY &&
		    kl_rd16(slot(s, i) + 2) == seq && slot(s, i)[0] == (KL_CMD_INFO | KL_CMD_REPLY)) {
			resend(s, i);
			return;
		}
		s->have_nonce = ver != KL_PROTO_V1 && plen == 4u;
		s->info_nonce = nonce;
		clear_window(s);
		execute(s, seq);
		return;
	}
	if (s->have_seq && behind < w) {
		/* a retransmission of an executed request: its cached reply again,
		 * no second execution */
		const unsigned i = slot_of(s, seq);
		const uint8_t *r = slot(s, i);
		if (s->slot_state[i] == SLOT_REPLY && kl_rd16(r + 2) == seq &&
		    r[0] == (uint8_t)(type | KL_CMD_REPLY)) {
			resend(s, i);
			return;
		}
	} else if (s->have_seq && ahead == 1u) {
		execute(s, seq);
		run_held(s);
		return;
	} else if (s->have_seq && ahead <= w) {
		/* version 2, ahead of a gap: held (once) until the requests before it
		 * come; an ACK says so */
		const unsigned i = slot_of(s, seq);
		uint8_t *h = slot(s, i);
		if (s->slot_state[i] != SLOT_HELD || kl_rd16(h + 2) != seq) {
			memcpy(h, f, KL_FRAME_HEADER + plen);
			s->slot_state[i] = SLOT_HELD;
		}
		ack(s, seq);
		return;
	}
	nak(s, KL_ESEQ, seq);
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
