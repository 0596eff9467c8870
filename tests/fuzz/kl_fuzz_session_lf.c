/*
 * libFuzzer target: whole sessions through kl_session_feed() (docs/protocol.md)
 * over a NOR-simulated or RAM weight store (docs/flash-store.md).
 *
 * Input: a config byte, then records (helpers in kl_fuzz_lf.h):
 *   byte 0      bit 0 RAM store (else NOR simulation); bits 1-2 arena 256K/48K/12K/3K;
 *               bits 3-4 NOR geometry (see GEOMS); bit 5 a window of FZ_WINDOW requests
 *               (protocol version 2; FRAME records with a seq of their own then speak
 *               version 1, whose window is one)
 *   op & 7 0..2 FRAME  type u8, sel u8 (seq: 0 next, 1 last, 2 u16 follows, 3 next + u8),
 *                      [version u8 if op & 8], len u16, payload; op bits 4-5 damage the
 *                      frame: 1 CRC, 2 length field, 3 cut short (CONFIG: replay ratios
 *                      taken mod 16)
 *          3    RAW    n u8, n bytes fed as they are (then a 0x00 delimiter)
 *          3+8  WINDOW (window on) k u8 (1 + mod FZ_WINDOW requests), per request kind u8
 *                      (STATS/TRAIN/EVAL), label u16, n u8, n bytes; then m u8 sends of
 *                      one of them, index u8 each, in any order, again and again; then
 *                      the ones still without a reply, in order
 *          4    SAMPLE cmd u8 (TRAIN/EVAL/PREDICT), label u16, n u8, n bytes: a sample of
 *                      the running model's size (op & 8: label mod classes + 1; op & 16:
 *                      raw float bits; op & 32: a size off by a signed delta u8)
 *          5    LOAD   blob u8 (kl_fuzz_blobs.h), chunk u16 (64 + mod 1984), flags u8 [at u16, val u8]:
 *                      flags 1 patch a byte, 2 reseal the blob's CRC, 4 stop before END,
 *                      8 wrong END CRC
 *          6    REBOOT the store attached again and the session re-initialised
 *          7    CUT    k u16, seed u8: power lost at the k-th program/erase step (NOR)
 *
 * Checked (besides ASan/UBSan): every reply is a well-formed frame with the
 * request's sequence number, one per frame (a WINDOW's: the replies in
 * sequence order, each request run once: STATS' train steps, a request sent
 * again after its reply gets that reply byte for byte, one held gets an ACK
 * whose map holds it, never a NAK); the sequencing rules (a NAK for
 * a frame out of order, the cached reply for a retransmission, a NAK never
 * uses a sequence number, reply types never taken for requests); a refused
 * CONFIG changes nothing (INFO and the active generation); a refused LOAD END
 * or COMMIT leaves the active generation; an accepted one makes generation
 * + 1 whose blob passes kl_blob_check (LOAD: byte for byte the blob sent);
 * after a reboot the generation is the last one or (a cut during the header)
 * the next, its blob passes kl_blob_check and (full arena) the model is up.
 */
#include "kl_fuzz_lf.h"
#include "kl_fuzz_blobs.h"

static const kl_store_geom_t GEOMS[4] = {
	{64u * 1024u, 4096u, 16u, 0xFFu},
	{64u * 1024u, 8192u, 64u, 0x00u},
	{32u * 1024u, 2048u, 8u, 0xFFu},
	{64u * 1024u, 16384u, 256u, 0xFFu},
};
static const size_t ARENAS[4] = {256u * 1024u, 48u * 1024u, 12u * 1024u, 3u * 1024u};

static fz_harness_t H;
static uint32_t blob_buf[FZ_BLOB_MAX / 4u];
static uint8_t payload[KL_SESSION_MAX_PAYLOAD + 64u];
static uint8_t wire[FZ_WIRE_CAP];

static int same_info(const fz_info_t *a, const fz_info_t *b)
{
	return a->loaded == b->loaded && a->dtype == b->dtype && a->inputs == b->inputs &&
	       a->classes == b->classes && a->cut == b->cut && a->replay_cap == b->replay_cap;
}

/* CONFIG items as the device reads them; replay ratios kept below 16 and sample
 * buffers below 256 (a ratio of 65535 makes every TRAIN 65535 replay steps, a buffer
 * of thousands every EPOCHS thousands of steps: slow, and nothing new to the fuzzer) */
static void tame_config(uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 2u <= n && p[i + 1] <= n - i - 2u; i += 2u + p[i + 1]) {
		if (p[i] == KL_CFG_REPLAY_RATIO && p[i + 1] == 2u) {
			p[i + 2] &= 15u;
			p[i + 3] = 0;
		}
		if (p[i] == KL_CFG_BUFFER && p[i + 1] == 4u && p[i + 5] <= 0x7Fu) {
			/* at most 255 samples; a capacity with its top bit set stays (refused) */
			p[i + 3] = p[i + 4] = p[i + 5] = 0;
		}
	}
}

static void frame_record(fz_in_t *in, uint8_t op)
{
	const uint8_t type = fz_u8(in), sel = fz_u8(in);
	uint16_t seq;
	switch (sel & 3u) {
	case 0:
		seq = fz_next_seq(&H, type);
		break;
	case 1:
		seq = H.last_seq;
		break;
	case 2:
		seq = fz_u16(in);
		break;
	default:
		seq = (uint16_t)(fz_next_seq(&H, type) + fz_u8(in));
		break;
	}
	uint8_t ver = (op & 8u) ? fz_u8(in) : KL_PROTO_VERSION;
	if (H.window_on && ver == KL_PROTO_VERSION && (sel & 3u) >= 2u) {
		ver = KL_PROTO_V1; /* out of order in version 2 is held: WINDOW records test that */
	}
	const size_t want = fz_u16(in) % (KL_SESSION_MAX_PAYLOAD + 64u);
	size_t n;
	const uint8_t *p = fz_take(in, want, &n);
	memcpy(payload, p, n);
	if (type == KL_CMD_CONFIG) {
		tame_config(payload, n);
	}
	if (type == KL_CMD_EPOCHS && n == 2u && payload[1] == 0u) {
		payload[0] &= 3u; /* a few epochs (0: refused); other lengths stay as they are */
	}
	const unsigned damage = (op >> 4) & 3u;
	if (damage != 0u) { /* a damaged frame: one NAK(KL_EFRAME), nothing else */
		size_t w = fz_frame(wire, sizeof(wire), type, ver, seq, payload, n,
				    (uint16_t)(damage == 2u ? n + 1u + (sel >> 2) : n));
		if (damage == 1u) {
			wire[w - 2u] = (uint8_t)(wire[w - 2u] == 1u ? 2u : 1u); /* the CRC's COBS byte */
		} else if (damage == 3u) {
			const size_t cut = 1u + (sel >> 2) % 4u;
			memmove(wire + w - 1u - cut, wire + w - 1u, 1u);
			w -= cut;
			if (fz_decodes(wire, w - 1u)) {
				/* only a redundant final COBS code went (the empty group after
				 * a 254-byte one): the same frame */
				FZ_CHECK(fz_feed(&H, wire, w) == 1, "a frame got no reply");
				return;
			}
		}
		const int frames = fz_feed(&H, wire, w);
		if (fz_trace()) {
			fprintf(stderr, "kl_fuzz: > damaged (%u) type %#04x ver %u seq %u, %zu bytes, "
				"wire %zu\nkl_fuzz: <   type %#04x seq %u status %d\n", damage, type, ver,
				seq, n, w, H.r.type, H.r.seq, (int)H.r.status);
		}
		FZ_CHECK(frames == 1 && H.r.type == KL_CMD_NAK && H.r.status == KL_EFRAME,
			 "a damaged frame (%u) got %d replies, type %#x status %d", damage, frames,
			 H.r.type, (int)H.r.status);
		return;
	}
	/* commands that change the store or the settings: INFO and STATS before
	 * and after (only for an in-sequence request, so the probes do not change
	 * what the frame tests) */
	const int is_end = type == KL_CMD_LOAD && n >= 1u && payload[0] == KL_LOAD_END;
	const int watched = (sel & 3u) == 0u && fz_known_version(ver) && n <= KL_SESSION_MAX_PAYLOAD &&
			    (type == KL_CMD_CONFIG || type == KL_CMD_COMMIT || type == KL_CMD_RESET ||
			     is_end);
	fz_info_t i0 = {0, 0, 0, 0, 0, 0};
	fz_stats_t s0 = {0, 0, 0};
	if (watched) {
		i0 = fz_info(&H);
		s0 = fz_check_active(&H, "before a command");
		seq = fz_next_seq(&H, type);
	}
	const int expect = fz_send(&H, type, ver, seq, payload, n);
	if (!watched || expect != FZ_EXPECT_EXEC || H.r.type == KL_CMD_NAK) {
		return;
	}
	const int32_t status = H.r.status;
	const fz_info_t i1 = fz_info(&H);
	const fz_stats_t s1 = fz_check_active(&H, "after a command");
	if (status != KL_OK || type == KL_CMD_RESET) {
		FZ_CHECK(s1.generation == s0.generation && s1.slot_off == s0.slot_off,
			 "command %#x (status %d) moved the active generation %u@%#x -> %u@%#x", type,
			 (int)status, s0.generation, s0.slot_off, s1.generation, s1.slot_off);
	}
	if (type == KL_CMD_CONFIG && status != KL_OK) {
		FZ_CHECK(same_info(&i0, &i1), "a refused CONFIG (%d) changed the session: loaded %u->%u "
			 "cut %u->%u replay cap %u->%u", (int)status, i0.loaded, i1.loaded, i0.cut,
			 i1.cut, i0.replay_cap, i1.replay_cap);
	}
	if ((type == KL_CMD_COMMIT || is_end) && status == KL_OK) {
		FZ_CHECK(s1.generation == s0.generation + 1u, "%s OK: generation %u -> %u",
			 is_end ? "LOAD END" : "COMMIT", s0.generation, s1.generation);
		FZ_CHECK(i1.loaded, "%s OK but no model running", is_end ? "LOAD END" : "COMMIT");
	}
}

static void sample_record(fz_in_t *in, uint8_t op, fz_info_t *info, int *info_ok)
{
	static const uint8_t cmds[3] = {KL_CMD_TRAIN, KL_CMD_EVAL, KL_CMD_PREDICT};
	const uint8_t cmd = cmds[fz_u8(in) % 3u];
	uint16_t label = fz_u16(in);
	size_t n_src;
	const uint8_t *src = fz_take(in, fz_u8(in), &n_src);
	const int8_t delta = (op & 32u) ? (int8_t)fz_u8(in) : 0;
	if (!*info_ok) {
		*info = fz_info(&H);
		*info_ok = 1;
	}
	if (op & 8u) {
		label = (uint16_t)(label % (info->classes + 1u));
	}
	size_t n = fz_sample(payload, info, label, cmd != KL_CMD_PREDICT, src, n_src, op & 16u);
	if (delta < 0) {
		n = (size_t)-delta > n ? 0u : n - (size_t)-delta;
	} else if (delta > 0) {
		memset(payload + n, 0x5A, (size_t)delta);
		n += (size_t)delta;
	}
	(void)fz_send(&H, cmd, KL_PROTO_VERSION, fz_next_seq(&H, cmd), payload, n);
}

/* WINDOW: up to FZ_WINDOW version 2 requests, sent in the order (and as often) the input
 * says, then the ones without a reply in order. */
static void window_record(fz_in_t *in, fz_info_t *info, int *info_ok)
{
	static uint8_t wires[FZ_WINDOW][FZ_WIRE_CAP];
	static uint8_t first[FZ_WINDOW][KL_FRAME_WIRE_MAX];
	size_t wlen[FZ_WINDOW], first_len[FZ_WINDOW];
	uint8_t types[FZ_WINDOW];
	int replied[FZ_WINDOW] = {0};
	const unsigned k = 1u + fz_u8(in) % FZ_WINDOW;
	if (!*info_ok) {
		*info = fz_info(&H);
		*info_ok = 1;
	}
	const fz_stats_t s0 = fz_stats(&H); /* also starts a sequence */
	const uint16_t base = H.last_seq;
	for (unsigned i = 0; i < k; i++) {
		static const uint8_t kinds[3] = {KL_CMD_STATS, KL_CMD_TRAIN, KL_CMD_EVAL};
		types[i] = kinds[fz_u8(in) % 3u];
		const uint16_t label = (uint16_t)(fz_u16(in) % (info->classes + 1u));
		size_t n_src;
		const uint8_t *src = fz_take(in, fz_u8(in), &n_src);
		const size_t n = types[i] == KL_CMD_STATS ? 0u
			: fz_sample(payload, info, label, 1, src, n_src, 0);
		wlen[i] = fz_frame(wires[i], sizeof(wires[i]), types[i], KL_PROTO_VERSION,
				   (uint16_t)(base + 1u + i), payload, n, (uint16_t)n);
		FZ_CHECK(wlen[i] != 0u, "a window request of %zu bytes", n);
	}
	uint16_t next = (uint16_t)(base + 1u); /* the next first reply, in order */
	uint32_t trained = 0;
	const unsigned sends = fz_u8(in) % (3u * k + 1u);
	for (unsigned t = 0; t < sends + 2u * k; t++) {
		unsigned i;
		if (t < sends) {
			i = fz_u8(in) % k;
		} else { /* then every one still without a reply, in order (twice at most) */
			i = 0;
			while (i < k && replied[i]) {
				i++;
			}
			if (i == k) {
				break;
			}
		}
		const int frames = fz_feed(&H, wires[i], wlen[i]);
		FZ_CHECK(frames >= 1, "window request seq %u got no frame", (unsigned)(base + 1u + i));
		for (size_t at = 0, st = 0; at < H.tx_len; at++) {
			if (H.tx[at] != 0u) {
				continue;
			}
			static fz_reply_t r;
			fz_decode_reply(H.tx + st, at - st, &r);
			const size_t len = at - st;
			const uint8_t *w = H.tx + st;
			st = at + 1u;
			if (fz_trace()) {
				fprintf(stderr, "kl_fuzz: window > seq %u type %#04x, < type %#04x seq %u "
					"status %d\n", (unsigned)(uint16_t)(base + 1u + i), types[i], r.type,
					r.seq, (int)r.status);
			}
			FZ_CHECK(r.type != KL_CMD_NAK, "window request seq %u: NAK %d",
				 (unsigned)(base + 1u + i), (int)r.status);
			if (fz_is_ack(&r)) {
				const uint16_t held = fz_rd16(r.payload);
				const uint32_t map = fz_rd32(r.payload + 2);
				const uint16_t d = (uint16_t)(held - r.seq);
				FZ_CHECK(r.seq == (uint16_t)(next - 1u) && held == (uint16_t)(base + 1u + i) &&
					 d >= 2u && d <= FZ_WINDOW && (map >> (d - 1u) & 1u) && (map & 1u) == 0u &&
					 map >> FZ_WINDOW == 0u,
					 "ACK seq %u held %u map %#x, last run %u, sent %u", r.seq, held,
					 (unsigned)map, (unsigned)(uint16_t)(next - 1u),
					 (unsigned)(base + 1u + i));
				for (unsigned j = 1; j < FZ_WINDOW; j++) { /* held: sent, no reply */
					const unsigned q = (unsigned)(uint16_t)(r.seq + 1u + j - base - 1u);
					FZ_CHECK(!(map >> j & 1u) || (q < k && !replied[q]),
						 "ACK map %#x holds seq %u", (unsigned)map,
						 (unsigned)(uint16_t)(r.seq + 1u + j));
				}
				continue;
			}
			const unsigned j = (unsigned)(uint16_t)(r.seq - base - 1u);
			FZ_CHECK(j < k && r.type == (uint8_t)(types[j] | KL_CMD_REPLY),
				 "reply type %#x seq %u to a window from %u", r.type, r.seq,
				 (unsigned)(base + 1u));
			if (replied[j]) { /* sent again: the cached reply */
				FZ_CHECK(len == first_len[j] && memcmp(w, first[j], len) == 0,
					 "seq %u sent again got another reply", r.seq);
				continue;
			}
			FZ_CHECK(r.seq == next, "reply %u before %u: not in order", r.seq, next);
			replied[j] = 1;
			memcpy(first[j], w, len);
			first_len[j] = len;
			next++;
			trained += types[j] == KL_CMD_TRAIN && r.status == KL_OK;
		}
	}
	for (unsigned i = 0; i < k; i++) {
		FZ_CHECK(replied[i], "window request seq %u never answered", (unsigned)(base + 1u + i));
	}
	/* the host's view: the last request run and its reply */
	H.have_seq = 1;
	H.last_seq = (uint16_t)(base + k);
	H.cached_type = (uint8_t)(types[k - 1u] | KL_CMD_REPLY);
	H.cached_len = first_len[k - 1u];
	memcpy(H.cached, first[k - 1u], first_len[k - 1u]);
	const fz_stats_t s1 = fz_stats(&H);
	FZ_CHECK(s1.train_steps == s0.train_steps + trained, "train steps %u -> %u, %u TRAINs run "
		 "once each", s0.train_steps, s1.train_steps, trained);
}

static void load_record(fz_in_t *in)
{
	const fz_blob_t *b = &FZ_BLOBS[fz_u8(in) % FZ_N_BLOBS];
	const uint16_t chunk = (uint16_t)(64u + fz_u16(in) % (KL_SESSION_MAX_PAYLOAD - 64u));
	const uint8_t flags = fz_u8(in);
	uint8_t *blob = (uint8_t *)blob_buf;
	memcpy(blob, b->data, b->len);
	if (flags & 1u) {
		const uint16_t at = fz_u16(in);
		blob[at % b->len] = fz_u8(in);
	}
	if (flags & 2u) {
		fz_wr32(blob + KL_BH_CRC, kl_crc32(0, blob + KL_BLOB_CRC_START,
						   b->len - KL_BLOB_CRC_START));
	}
	const fz_stats_t s0 = fz_check_active(&H, "before a LOAD");
	const uint32_t crc = kl_crc32(0, blob, b->len) ^ ((flags & 8u) ? 1u : 0u);
	const int32_t status = fz_load(&H, blob, b->len, chunk, crc, flags & 4u);
	const fz_stats_t s1 = fz_check_active(&H, "after a LOAD");
	if (status != KL_OK || (flags & 4u)) {
		FZ_CHECK(s1.generation == s0.generation && s1.slot_off == s0.slot_off,
			 "a LOAD that %s (%d) moved the active generation %u@%#x -> %u@%#x",
			 status != KL_OK ? "failed" : "has not ended", (int)status, s0.generation,
			 s0.slot_off, s1.generation, s1.slot_off);
		return;
	}
	FZ_CHECK(s1.generation == s0.generation + 1u, "LOAD OK: generation %u -> %u", s0.generation,
		 s1.generation);
	const fz_slot_t sl = fz_slot_at(fz_mem(), &H.geom, s1.slot_off);
	FZ_CHECK(sl.len == b->len && memcmp(sl.blob, blob, b->len) == 0,
		 "LOAD OK but the stored blob is not the one sent");
	const fz_info_t i = fz_info(&H);
	FZ_CHECK(i.loaded, "LOAD OK but no model running");
}

static void reboot_record(void)
{
	const fz_stats_t s0 = fz_check_active(&H, "before a reboot");
	FZ_CHECK(fz_boot(&H) == KL_OK, "the session does not start again");
	const fz_stats_t s1 = fz_check_active(&H, "after a reboot");
	FZ_CHECK(s1.generation == s0.generation || s1.generation == s0.generation + 1u,
		 "generation %u before a reboot, %u after", s0.generation, s1.generation);
	if (s1.slot_off != 0xFFFFFFFFu && H.arena_size == ARENAS[0]) {
		const fz_info_t i = fz_info(&H);
		FZ_CHECK(i.loaded, "rebooted with generation %u but no model running", s1.generation);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	fz_in_t in = {data, size, 0};
	const uint8_t cfg = fz_u8(&in);
	const int ram = cfg & 1u;
	const kl_store_geom_t g = ram ? (kl_store_geom_t){FZ_STORE_MAX, KL_STORE_RAM_SECTOR, 1u, 0xFFu}
				      : GEOMS[(cfg >> 3) & 3u];
	FZ_CHECK(fz_setup(&H, &g, ram, ARENAS[(cfg >> 1) & 3u], (cfg >> 5) & 1u) == KL_OK,
		 "session init failed");
	fz_info_t info;
	int info_ok = 0;
	/* at most 512 records and about 2000 frames: an input stays a few milliseconds */
	for (int rec = 0; rec < 512 && H.frames < 2000u && fz_left(&in) > 0u; rec++) {
		const uint8_t op = fz_u8(&in);
		switch (op & 7u) {
		case 0:
		case 1:
		case 2:
			frame_record(&in, op);
			info_ok = 0;
			break;
		case 3: {
			if ((op & 8u) && H.window_on) {
				window_record(&in, &info, &info_ok);
				break;
			}
			size_t n;
			const uint8_t *p = fz_take(&in, fz_u8(&in), &n);
			size_t zeros = 0;
			for (size_t i = 0; i < n; i++) {
				zeros += p[i] == 0u;
			}
			const int frames = fz_feed(&H, p, n);
			FZ_CHECK((size_t)frames <= zeros, "%d replies to %zu raw bytes with %zu "
				 "delimiters", frames, n, zeros);
			const uint8_t z = 0;
			FZ_CHECK(fz_feed(&H, &z, 1) <= 1, "more than one reply to a delimiter");
			info_ok = 0;
			break;
		}
		case 4:
			sample_record(&in, op, &info, &info_ok);
			break;
		case 5:
			load_record(&in);
			info_ok = 0;
			break;
		case 6:
			reboot_record();
			info_ok = 0;
			break;
		default: {
			const uint16_t k = fz_u16(&in);
			const uint8_t seed = fz_u8(&in);
			if (!ram) {
				kl_store_nor_cut(&H.st, 1u + k % 2048u, seed);
			}
			break;
		}
		}
	}
	return 0;
}
