/*
 * Shared helpers of the libFuzzer targets (tests/fuzz/kl_fuzz_*_lf.c): an input
 * cursor, frames (COBS + CRC, docs/protocol.md) built and checked, the weight
 * store's slot layout read independently of kl_slots.c (docs/flash-store.md),
 * and a session harness that drives kl_session_feed() over a NOR-simulated or
 * RAM store and checks every reply against the protocol's rules.
 *
 * The harness only looks at the device through the protocol (replies, INFO,
 * STATS) and at the store's memory, never at kl_session_t's fields, so the
 * session core can change inside without breaking the targets.
 *
 * A failed invariant prints one line starting with "kl_fuzz:" and aborts
 * (libFuzzer reports a crash and writes the reproducer).
 */
#ifndef KL_FUZZ_LF_H
#define KL_FUZZ_LF_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_blob.h"
#include "kilolearn/kl_session.h"
#include "kilolearn/kl_store.h"
#include "kl_blob_read.h" /* modules/kilolearn/src */

#define FZ_CHECK(cond, ...)                                                     \
	do {                                                                    \
		if (!(cond)) {                                                  \
			fprintf(stderr, "kl_fuzz: invariant failed: %s (%s:%d): ", #cond, \
				__FILE__, __LINE__);                            \
			fprintf(stderr, __VA_ARGS__);                           \
			fprintf(stderr, "\n");                                  \
			abort();                                                \
		}                                                               \
	} while (0)

/* ---- little-endian fields ------------------------------------------------------ */
/* the engine's little-endian field helpers */
#define fz_rd16 kl_rd16
#define fz_rd32 kl_rd32
#define fz_wr16 kl_wr16
#define fz_wr32 kl_wr32

/* KL_FUZZ_TRACE=1 in the environment: every frame and reply on stderr (to
 * read what a reproducer does) */
static inline int fz_trace(void)
{
	static int t = -1;
	if (t < 0) {
		const char *e = getenv("KL_FUZZ_TRACE");
		t = e != NULL && e[0] != '\0' && e[0] != '0';
	}
	return t;
}

/* ---- the fuzzer's bytes, read front to back (zeros past the end) -------------- */
typedef struct {
	const uint8_t *p;
	size_t n, i;
} fz_in_t;

static inline size_t fz_left(const fz_in_t *in)
{
	return in->n - in->i;
}

static inline uint8_t fz_u8(fz_in_t *in)
{
	return in->i < in->n ? in->p[in->i++] : 0u;
}

static inline uint16_t fz_u16(fz_in_t *in)
{
	const uint16_t lo = fz_u8(in);
	return (uint16_t)(lo | (fz_u8(in) << 8));
}

static inline uint32_t fz_u32(fz_in_t *in)
{
	const uint32_t lo = fz_u16(in);
	return lo | ((uint32_t)fz_u16(in) << 16);
}

/* up to n bytes in place; *got says how many */
static inline const uint8_t *fz_take(fz_in_t *in, size_t n, size_t *got)
{
	const size_t m = n < fz_left(in) ? n : fz_left(in);
	const uint8_t *p = in->p + in->i;
	in->i += m;
	*got = m;
	return p;
}

/* ---- frames -------------------------------------------------------------------- */
#define FZ_WIRE_CAP (2u * KL_FRAME_WIRE_MAX + 64u)

/* A frame on the wire (COBS, then the 0x00 delimiter) for a decoded body of
 * header (type, version, seq, len) + payload + CRC. `len_field` is what the
 * header claims; a correct frame has len_field == n. Returns the wire length
 * (0 if it does not fit `cap`). */
static inline size_t fz_frame(uint8_t *wire, size_t cap, uint8_t type, uint8_t ver, uint16_t seq,
			      const uint8_t *payload, size_t n, uint16_t len_field)
{
	static uint8_t body[KL_FRAME_HEADER + 65536u + KL_FRAME_CRC];
	body[0] = type;
	body[1] = ver;
	fz_wr16(body + 2, seq);
	fz_wr16(body + 4, len_field);
	if (n != 0u) {
		memcpy(body + KL_FRAME_HEADER, payload, n);
	}
	fz_wr32(body + KL_FRAME_HEADER + n, kl_crc32(0, body, KL_FRAME_HEADER + n));
	const size_t w = kl_cobs_encode(body, KL_FRAME_HEADER + n + KL_FRAME_CRC, wire, cap - 1u);
	if (w == 0u) {
		return 0;
	}
	wire[w] = 0;
	return w + 1u;
}

/* Does this wire frame (without its delimiter) decode to a frame with a
 * matching length field and CRC? */
static inline int fz_decodes(const uint8_t *wire, size_t n)
{
	static uint8_t body[KL_FRAME_HEADER + 65536u + KL_FRAME_CRC];
	const size_t len = kl_cobs_decode(wire, n, body, sizeof(body));
	if (len < KL_FRAME_HEADER + KL_FRAME_CRC) {
		return 0;
	}
	const uint32_t plen = fz_rd16(body + 4);
	return plen == len - KL_FRAME_HEADER - KL_FRAME_CRC &&
	       kl_crc32(0, body, KL_FRAME_HEADER + plen) == fz_rd32(body + KL_FRAME_HEADER + plen);
}

/* A reply as the host decodes it (protocol.py's unpack). */
typedef struct {
	uint8_t type, ver;
	uint16_t seq;
	int32_t status;
	uint16_t n;               /* payload bytes after the status */
	uint8_t body[KL_FRAME_MAX]; /* the decoded frame */
	const uint8_t *payload;   /* body + header + 4 */
} fz_reply_t;

static inline int fz_is_ack(const fz_reply_t *r)
{
	return r->type == KL_CMD_ACK && r->ver == KL_PROTO_VERSION;
}

/* Decode one wire frame (without its delimiter). Every frame a device sends
 * must pass: COBS, length field, CRC, version 1, a status. */
static inline void fz_decode_reply(const uint8_t *wire, size_t n, fz_reply_t *r)
{
	const size_t len = kl_cobs_decode(wire, n, r->body, sizeof(r->body));
	FZ_CHECK(len >= KL_FRAME_HEADER + 4u + KL_FRAME_CRC, "reply of %zu wire bytes: bad COBS or "
		 "shorter than header + status + CRC (%zu decoded)", n, len);
	const uint32_t plen = fz_rd16(r->body + 4);
	FZ_CHECK(plen == len - KL_FRAME_HEADER - KL_FRAME_CRC, "reply length field %u, %zu bytes",
		 plen, len);
	FZ_CHECK(kl_crc32(0, r->body, KL_FRAME_HEADER + plen) ==
			 fz_rd32(r->body + KL_FRAME_HEADER + plen),
		 "reply CRC mismatch");
	FZ_CHECK(plen <= KL_SESSION_MAX_PAYLOAD, "reply payload %u > max_payload", plen);
	r->type = r->body[0];
	r->ver = r->body[1];
	/* a reply: the request's version; a NAK: 1; an ACK: 2 (type 0xFE in version 1 is
	 * the reply to request type 0x7E) */
	FZ_CHECK(r->ver == KL_PROTO_V1 || r->ver == KL_PROTO_VERSION, "reply version %u", r->ver);
	FZ_CHECK(r->body[0] != KL_CMD_NAK || r->ver == KL_PROTO_V1, "NAK version %u", r->ver);
	r->seq = fz_rd16(r->body + 2);
	r->status = (int32_t)fz_rd32(r->body + KL_FRAME_HEADER);
	r->n = (uint16_t)(plen - 4u);
	r->payload = r->body + KL_FRAME_HEADER + 4u;
	FZ_CHECK(r->type == KL_CMD_NAK || (r->type & KL_CMD_REPLY) != 0u, "reply type %#x", r->type);
	FZ_CHECK(!fz_is_ack(r) || (r->status == KL_OK && r->n == 6u), "an ACK with status %d, "
		 "%u bytes after it", (int)r->status, r->n);
	FZ_CHECK(r->type != KL_CMD_NAK || r->status != KL_OK, "a NAK with status 0");
}

/* ---- the store's slots, read by the documented layout -------------------------- */
typedef struct {
	int valid;          /* magic, header CRC, data offset, length and blob CRC all fine */
	uint64_t seq;       /* as the header says (KLS1: 32 bits, KLS2: 64) */
	uint32_t len;
	const uint8_t *blob;
} fz_slot_t;

static inline uint32_t fz_data_off(const kl_store_geom_t *g)
{
	return g->write_block > KL_SLOT_HDR ? g->write_block : KL_SLOT_HDR;
}

/* The slot header at sector start `off` of a memory image (docs/flash-store.md). */
static inline fz_slot_t fz_slot_at(const uint8_t *mem, const kl_store_geom_t *g, uint32_t off)
{
	fz_slot_t s = {0, 0, 0, NULL};
	const uint32_t d = fz_data_off(g);
	if (off % g->erase_block != 0u || off >= g->size || g->size - off < d) {
		return s;
	}
	const uint8_t *h = mem + off;
	const int v2 = fz_rd32(h) == KL_SLOT_MAGIC; /* KLS2: seq high half at 20, CRC at 24 */
	s.seq = fz_rd32(h + 4) | (v2 ? (uint64_t)fz_rd32(h + 20) << 32 : 0u);
	s.len = fz_rd32(h + 8);
	const uint32_t hl = v2 ? 24u : 20u;
	if ((!v2 && fz_rd32(h) != KL_SLOT_MAGIC_V1) || fz_rd32(h + hl) != kl_crc32(0, h, hl) ||
	    s.seq == 0u || fz_rd32(h + 16) != d || s.len == 0u || s.len > g->size - off - d) {
		return s;
	}
	s.blob = mem + off + d;
	s.valid = kl_crc32(0, s.blob, s.len) == fz_rd32(h + 12);
	return s;
}

/* Write a slot header in the older KLS1 layout (a store of an earlier version, or
 * a crafted one: 32-bit sequence numbers; CRCs computed unless told to break
 * them). */
static inline void fz_put_header(uint8_t *h, uint32_t seq, uint32_t len, uint32_t blob_crc,
				 uint32_t data_off)
{
	fz_wr32(h, KL_SLOT_MAGIC_V1);
	fz_wr32(h + 4, seq);
	fz_wr32(h + 8, len);
	fz_wr32(h + 12, blob_crc);
	fz_wr32(h + 16, data_off);
	fz_wr32(h + 20, kl_crc32(0, h, 20));
}

/* ---- the session harness -------------------------------------------------------- */
#define FZ_STORE_MAX  (64u * 1024u)
#define FZ_ARENA_MAX  (256u * 1024u)
#define FZ_TX_CAP     (8u * KL_FRAME_WIRE_MAX)

typedef struct {
	/* the device */
	kl_session_t sess;
	kl_store_t st;
	kl_nor_sim_t nor;
	kl_store_geom_t geom;
	int ram; /* a RAM store (kl_store_ram_init) instead of the NOR simulation */
	uint8_t *arena; /* fz_arena_mem unless set before fz_boot() */
	uint32_t wear[2u * 256u]; /* per-sector erases and bytes (STATS), kept over reboots */
	size_t arena_size;
	/* what it sent since the last fz_feed() */
	uint8_t tx[FZ_TX_CAP];
	size_t tx_len;
	int tx_overflow;
	/* the host's view of the sequencing (docs/protocol.md), built from the
	 * replies alone */
	int have_seq;
	uint16_t last_seq;
	uint8_t cached_type; /* 0: none */
	uint8_t cached[KL_FRAME_WIRE_MAX];
	size_t cached_len;
	/* the last reply received; frames fed so far (a budget per input) */
	fz_reply_t r;
	uint32_t frames;
	/* protocol version 2's window: the session given memory for FZ_WINDOW
	 * requests in flight at every boot (0: none, window 1) */
	int window_on;
} fz_harness_t;

#define FZ_WINDOW 4u
static uint32_t fz_window_mem[KL_SESSION_WINDOW_BYTES(FZ_WINDOW) / 4u + 1u];

static uint32_t fz_store_mem[FZ_STORE_MAX / 4u];
static uint32_t fz_arena_mem[FZ_ARENA_MAX / 4u];

static inline uint8_t *fz_mem(void)
{
	return (uint8_t *)fz_store_mem;
}

static inline void fz_tx(void *ctx, const uint8_t *buf, size_t n)
{
	fz_harness_t *h = ctx;
	if (n > sizeof(h->tx) - h->tx_len) {
		h->tx_overflow = 1;
		return;
	}
	memcpy(h->tx + h->tx_len, buf, n);
	h->tx_len += n;
}

/* (Re)attach the store to its memory: a power-on. The contents stay. */
static inline void fz_store_attach(fz_harness_t *h)
{
	if (h->ram) {
		kl_store_ram_init(&h->st, fz_mem(), h->geom.size);
		h->geom = h->st.geom;
	} else {
		FZ_CHECK(kl_store_nor_init(&h->st, &h->nor, fz_mem(), &h->geom) == KL_OK,
			 "geometry %u/%u/%u rejected", h->geom.size, h->geom.erase_block,
			 h->geom.write_block);
	}
	const uint32_t n = kl_store_sectors(&h->st) < 256u ? kl_store_sectors(&h->st) : 256u;
	if (kl_store_sectors(&h->st) <= 256u) {
		kl_store_set_wear(&h->st, h->wear, h->wear + n);
	}
}

/* the replay store of a flash replay buffer (CONFIG key 9): a small NOR
 * simulation of its own, erased at setup, kept over reboots */
#define FZ_REPLAY_SIZE (16u * 1024u)
static kl_store_t fz_replay_st;
static kl_nor_sim_t fz_replay_nor;
static uint64_t fz_replay_mem[FZ_REPLAY_SIZE / 8u];

/* Boot: the store attached again and the session started on it. Returns
 * kl_session_init's code. The host's sequencing view starts over. */
static inline int fz_boot(fz_harness_t *h)
{
	fz_store_attach(h);
	const kl_store_geom_t rg = {FZ_REPLAY_SIZE, 1024u, 16u, 0xFFu};
	FZ_CHECK(kl_store_nor_init(&fz_replay_st, &fz_replay_nor, (uint8_t *)fz_replay_mem, &rg) ==
			 KL_OK, "replay store");
	if (h->arena == NULL) {
		h->arena = (uint8_t *)fz_arena_mem;
	}
	const kl_session_cfg_t cfg = {h->arena, h->arena_size, &h->st, fz_tx, h, NULL, NULL,
				      &fz_replay_st};
	h->have_seq = 0;
	h->cached_type = 0;
	h->cached_len = 0;
	const int err = kl_session_init(&h->sess, &cfg);
	if (err == KL_OK && h->window_on) {
		FZ_CHECK(kl_session_window(&h->sess, (uint8_t *)fz_window_mem,
					   sizeof(fz_window_mem)) == FZ_WINDOW,
			 "window memory for %u requests", FZ_WINDOW);
	}
	return err;
}

/* A fresh device over an erased store of geometry g (or a RAM store of
 * g->size bytes). */
static inline int fz_setup(fz_harness_t *h, const kl_store_geom_t *g, int ram, size_t arena_size,
			   int window_on)
{
	memset(h, 0, sizeof(*h));
	h->window_on = window_on;
	h->geom = *g;
	h->ram = ram;
	h->arena_size = arena_size;
	memset(fz_mem(), ram ? 0xFF : g->erase_value, g->size);
	memset(fz_replay_mem, 0xFF, sizeof(fz_replay_mem));
	return fz_boot(h);
}

/* Feed bytes; returns how many reply frames came back (each checked). The
 * last one is in h->r. */
static inline int fz_feed(fz_harness_t *h, const uint8_t *bytes, size_t n)
{
	h->tx_len = 0;
	h->tx_overflow = 0;
	h->frames++;
	kl_session_feed(&h->sess, bytes, n);
	FZ_CHECK(!h->tx_overflow, "more reply bytes than %u", (unsigned)FZ_TX_CAP);
	int frames = 0;
	size_t start = 0;
	for (size_t i = 0; i < h->tx_len; i++) {
		if (h->tx[i] != 0u) {
			continue;
		}
		FZ_CHECK(i > start, "an empty frame (two delimiters) on the wire");
		fz_decode_reply(h->tx + start, i - start, &h->r);
		frames++;
		/* a reply (not a NAK, not an ACK) is the device's new cached reply */
		if (h->r.type != KL_CMD_NAK && !fz_is_ack(&h->r)) {
			h->have_seq = 1;
			h->last_seq = h->r.seq;
			h->cached_type = h->r.type;
			h->cached_len = i - start;
			memcpy(h->cached, h->tx + start, h->cached_len);
		}
		start = i + 1u;
	}
	FZ_CHECK(start == h->tx_len, "the device's output does not end with a delimiter");
	return frames;
}

/* The reply class the protocol's rules predict for a well-formed frame
 * (valid COBS, length and CRC) of this type/version/seq, from the replies
 * seen so far. */
enum { FZ_EXPECT_EXEC, FZ_EXPECT_RETRANSMIT, FZ_EXPECT_NAK, FZ_EXPECT_NAK_ANY };

static inline int fz_known_version(uint8_t ver)
{
	return ver == KL_PROTO_V1 || ver == KL_PROTO_VERSION;
}

static inline int fz_expect(const fz_harness_t *h, uint8_t type, uint8_t ver, uint16_t seq)
{
	if (!fz_known_version(ver)) {
		return FZ_EXPECT_NAK;
	}
	if (type >= ((ver == KL_PROTO_V1 ? KL_CMD_NAK : KL_CMD_ACK) & ~KL_CMD_REPLY)) {
		/* reply, ACK and NAK types are never requests, nor 0x7F (its reply
		 * type would be the NAK's) or, in version 2, 0x7E (the ACK's) */
		return FZ_EXPECT_NAK_ANY;
	}
	if (type == KL_CMD_INFO) {
		return FZ_EXPECT_EXEC;
	}
	if (h->have_seq && seq == h->last_seq && h->cached_type == (uint8_t)(type | KL_CMD_REPLY)) {
		return FZ_EXPECT_RETRANSMIT;
	}
	if (!h->have_seq || seq != (uint16_t)(h->last_seq + 1u)) {
		return FZ_EXPECT_NAK;
	}
	return FZ_EXPECT_EXEC;
}

/* Send one well-formed frame and check the single reply against the rules:
 * the same sequence number back; a retransmission gets the cached reply byte
 * for byte; a frame out of sequence or of another version a NAK; an executed
 * request a reply of type | 0x80, or a NAK that then must not have used the
 * sequence number (checked by the caller's next frame: a NAK never replaces
 * the cached reply). Returns the expectation it checked. */
static inline int fz_send(fz_harness_t *h, uint8_t type, uint8_t ver, uint16_t seq,
			  const uint8_t *payload, size_t n)
{
	static uint8_t wire[FZ_WIRE_CAP];
	const int expect = fz_expect(h, type, ver, seq);
	uint8_t before[KL_FRAME_WIRE_MAX];
	const size_t before_len = h->cached_len;
	memcpy(before, h->cached, before_len);
	const size_t w = fz_frame(wire, sizeof(wire), type, ver, seq, payload, n, (uint16_t)n);
	FZ_CHECK(w != 0u, "frame of %zu payload bytes does not fit", n);
	const int frames = fz_feed(h, wire, w);
	if (fz_trace()) {
		fprintf(stderr, "kl_fuzz: > type %#04x ver %u seq %u, %zu bytes:", type, ver, seq, n);
		for (size_t i = 0; i < n && i < 12u; i++) {
			fprintf(stderr, " %02x", payload[i]);
		}
		fprintf(stderr, "%s\nkl_fuzz: <   type %#04x seq %u status %d, %u bytes (%d frames)\n",
			n > 12u ? " ..." : "", h->r.type, h->r.seq, (int)h->r.status, h->r.n, frames);
	}
	if (n > KL_SESSION_MAX_PAYLOAD) { /* too long for the device: NAK(KL_EFRAME) */
		FZ_CHECK(frames == 1 && h->r.type == KL_CMD_NAK && h->r.status == KL_EFRAME,
			 "an oversized frame (%zu bytes) got %d replies, type %#x status %d", n,
			 frames, h->r.type, (int)h->r.status);
		return FZ_EXPECT_NAK;
	}
	FZ_CHECK(frames == 1, "request type %#x seq %u got %d reply frames", type, seq, frames);
	FZ_CHECK(h->r.seq == seq, "request seq %u, reply seq %u (type %#x)", seq, h->r.seq,
		 h->r.type);
	switch (expect) {
	case FZ_EXPECT_RETRANSMIT:
		FZ_CHECK(h->r.type == (uint8_t)(type | KL_CMD_REPLY), "a retransmission of type %#x "
			 "seq %u got type %#x status %d", type, seq, h->r.type, (int)h->r.status);
		FZ_CHECK(h->cached_len == before_len && memcmp(before, h->cached, before_len) == 0,
			 "a retransmission of type %#x seq %u did not get the cached reply again",
			 type, seq);
		break;
	case FZ_EXPECT_NAK:
		FZ_CHECK(h->r.type == KL_CMD_NAK, "request type %#x seq %u (host's last %u, %s) "
			 "version %u was executed (reply %#x status %d), expected a NAK", type, seq,
			 h->last_seq, h->have_seq ? "in sequence" : "no sequence", ver, h->r.type,
			 (int)h->r.status);
		FZ_CHECK(h->r.status == (!fz_known_version(ver) ? KL_EVERSION : KL_ESEQ),
			 "NAK status %d for type %#x seq %u ver %u", (int)h->r.status, type, seq, ver);
		break;
	case FZ_EXPECT_NAK_ANY:
		FZ_CHECK(h->r.type == KL_CMD_NAK, "request of type %#x seq %u was answered with "
			 "type %#x status %d, expected a NAK", type, seq, h->r.type, (int)h->r.status);
		break;
	default:
		FZ_CHECK(h->r.type == (uint8_t)(type | KL_CMD_REPLY) || h->r.type == KL_CMD_NAK,
			 "request type %#x answered with type %#x", type, h->r.type);
		FZ_CHECK(h->r.type != KL_CMD_NAK || h->r.status != KL_ESEQ,
			 "request type %#x seq %u in sequence (host's last %u) got NAK(KL_ESEQ): an "
			 "earlier NAK used a sequence number", type, seq, h->last_seq);
		break;
	}
	if (h->r.type == KL_CMD_NAK && type != KL_CMD_STATS && h->have_seq && fz_known_version(ver) &&
	    seq == (uint16_t)(h->last_seq + 1u)) {
		/* not executed: the same sequence number must still be free */
		const int32_t nak_status = h->r.status;
		(void)fz_send(h, KL_CMD_STATS, KL_PROTO_VERSION, seq, NULL, 0);
		FZ_CHECK(h->r.type == (KL_CMD_STATS | KL_CMD_REPLY),
			 "request type %#x seq %u got a NAK (status %d), but the device used the "
			 "sequence number: STATS with seq %u then got type %#x status %d", type, seq,
			 (int)nak_status, seq, h->r.type, (int)h->r.status);
	}
	return expect;
}

/* The next sequence number the protocol expects (INFO: any, 0 here). */
static inline uint16_t fz_next_seq(const fz_harness_t *h, uint8_t type)
{
	return type == KL_CMD_INFO ? 0u : (uint16_t)(h->have_seq ? h->last_seq + 1u : 0u);
}

/* A request the harness itself makes, in sequence; returns the status. A
 * request without a sequence yet starts one with INFO. */
static inline int32_t fz_request(fz_harness_t *h, uint8_t type, const uint8_t *p, size_t n)
{
	if (type != KL_CMD_INFO && !h->have_seq) {
		(void)fz_send(h, KL_CMD_INFO, KL_PROTO_VERSION, 0, NULL, 0);
		FZ_CHECK(h->r.type == (KL_CMD_INFO | KL_CMD_REPLY) && h->r.status == KL_OK,
			 "INFO failed: type %#x status %d", h->r.type, (int)h->r.status);
	}
	(void)fz_send(h, type, KL_PROTO_VERSION, fz_next_seq(h, type), p, n);
	FZ_CHECK(h->r.type == (uint8_t)(type | KL_CMD_REPLY), "request %#x got type %#x status %d",
		 type, h->r.type, (int)h->r.status);
	return h->r.status;
}

/* INFO and STATS fields the invariants use */
typedef struct {
	uint8_t loaded, dtype;
	uint16_t inputs, classes, cut;
	uint32_t replay_cap;
} fz_info_t;

static inline fz_info_t fz_info(fz_harness_t *h)
{
	fz_info_t i;
	FZ_CHECK(fz_request(h, KL_CMD_INFO, NULL, 0) == KL_OK && h->r.n >= 26u, "INFO: %d, %u bytes",
		 (int)h->r.status, h->r.n);
	const uint8_t *p = h->r.payload;
	i.loaded = p[6];
	i.dtype = p[7];
	i.inputs = fz_rd16(p + 8);
	i.classes = fz_rd16(p + 10);
	i.cut = fz_rd16(p + 12);
	i.replay_cap = fz_rd32(p + 14);
	return i;
}

typedef struct {
	uint32_t generation, slot_off, train_steps;
} fz_stats_t;

static inline fz_stats_t fz_stats(fz_harness_t *h)
{
	fz_stats_t s;
	FZ_CHECK(fz_request(h, KL_CMD_STATS, NULL, 0) == KL_OK && h->r.n >= 58u, "STATS: %d, %u bytes",
		 (int)h->r.status, h->r.n);
	s.train_steps = fz_rd32(h->r.payload);
	s.generation = fz_rd32(h->r.payload + 38);
	s.slot_off = fz_rd32(h->r.payload + 42);
	return s;
}

/* the active generation as STATS reports it, checked against the store memory */
static inline fz_stats_t fz_check_active(fz_harness_t *h, const char *when)
{
	const fz_stats_t s = fz_stats(h);
	if (fz_trace()) {
		fprintf(stderr, "kl_fuzz: %s: generation %u at %#x\n", when, s.generation, s.slot_off);
	}
	if (s.slot_off == 0xFFFFFFFFu) { /* none (a crafted image may hold a generation 0) */
		FZ_CHECK(s.generation == 0u, "%s: generation %u but no slot", when, s.generation);
		return s;
	}
	const fz_slot_t sl = fz_slot_at(fz_mem(), &h->geom, s.slot_off);
	/* STATS reports the low half of the 64-bit sequence number */
	FZ_CHECK(sl.valid && (uint32_t)sl.seq == s.generation, "%s: generation %u at %#x: the slot "
		 "there is %s (seq %llu)", when, s.generation, s.slot_off,
		 sl.valid ? "valid" : "not valid", (unsigned long long)sl.seq);
	FZ_CHECK(kl_blob_check(sl.blob, sl.len) == KL_OK, "%s: the active generation %u (%u bytes "
		 "at %#x) fails kl_blob_check: %d", when, s.generation, sl.len, s.slot_off,
		 kl_blob_check(sl.blob, sl.len));
	return s;
}

/* LOAD a blob in chunks of `chunk` bytes (BEGIN, DATA..., END with `end_crc`);
 * returns the first failing status or END's. */
static inline int32_t fz_load(fz_harness_t *h, const uint8_t *blob, uint32_t len, uint32_t chunk,
			      uint32_t end_crc, int stop_before_end)
{
	static uint8_t p[5u + KL_SESSION_MAX_PAYLOAD];
	if (chunk == 0u || chunk > KL_SESSION_MAX_PAYLOAD - 5u) {
		chunk = KL_SESSION_MAX_PAYLOAD - 5u;
	}
	p[0] = KL_LOAD_BEGIN;
	fz_wr32(p + 1, len);
	int32_t err = fz_request(h, KL_CMD_LOAD, p, 5);
	for (uint32_t off = 0; err == KL_OK && off < len; off += chunk) {
		const uint32_t m = len - off < chunk ? len - off : chunk;
		p[0] = KL_LOAD_DATA;
		fz_wr32(p + 1, off);
		memcpy(p + 5, blob + off, m);
		err = fz_request(h, KL_CMD_LOAD, p, 5u + m);
	}
	if (err == KL_OK && !stop_before_end) {
		p[0] = KL_LOAD_END;
		fz_wr32(p + 1, end_crc);
		err = fz_request(h, KL_CMD_LOAD, p, 5);
	}
	return err;
}

/* count input values of type dtype at out from the fuzz bytes (value i from
 * byte i + skip; f32: small floats, or with raw_f32 raw bit patterns), or from
 * a fixed pattern without bytes. Returns the bytes written. */
static inline size_t fz_fill(uint8_t *out, size_t count, uint8_t dtype, const uint8_t *src,
			     size_t n_src, int raw_f32, size_t skip)
{
	size_t k = 0;
	for (size_t i = 0; i < count; i++) {
		const size_t j = i + skip;
		const uint8_t b = n_src ? src[j % n_src] : (uint8_t)(j * 37u + 11u);
		if (dtype == KL_DTYPE_F32) {
			union {
				float f;
				uint32_t u;
			} v;
			if (raw_f32 && n_src >= 4u) {
				v.u = fz_rd32(src + (4u * j) % (n_src - 3u));
			} else {
				v.f = ((float)b - 128.0f) / 64.0f;
			}
			fz_wr32(out + k, v.u);
			k += 4;
		} else {
			out[k++] = b;
		}
	}
	return k;
}

/* A sample of the running model's size (f32: small floats from the bytes),
 * 4-aligned; `label` first when with_label. Returns the payload length. */
static inline size_t fz_sample(uint8_t *out, const fz_info_t *info, uint16_t label, int with_label,
			       const uint8_t *src, size_t n_src, int raw_f32)
{
	size_t k = 0;
	if (with_label) {
		fz_wr16(out, label);
		k = 2;
	}
	return k + fz_fill(out + k, info->inputs, info->dtype, src, n_src, raw_f32, 0);
}

#endif /* KL_FUZZ_LF_H */
