/* The session core's frames: COBS and CRC in, sequencing, dispatch to the
 * commands, replies out. docs/protocol.md is the specification; the commands
 * are kl_session_model.c (model lifecycle, LOAD, CONFIG, INFO) and
 * kl_session_cmds.c (TRAIN, EVAL, PREDICT, STATS, COMMIT, READ). */
#include <string.h>

#include "kl_session_priv.h"

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
	kl_wr16(f + 2, seq);
	kl_wr16(f + 4, (uint32_t)len);
	kl_wr32(f + KL_FRAME_HEADER + len, kl_crc32(0, f, KL_FRAME_HEADER + len));
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
	kl_wr32(f + KL_FRAME_HEADER, (uint32_t)status);
	send_raw(s, f, KL_CMD_NAK, seq, 4u);
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
	kl_wr32(out, (uint32_t)(r >= 0 ? KL_OK : r));
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
