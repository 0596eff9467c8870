/*
 * kilolearn session core: the continual-learning protocol of docs/protocol.md
 * (COBS frames with CRC-32 and sequence numbers; INFO, LOAD, TRAIN, EVAL,
 * PREDICT, COMMIT, STATS, CONFIG, RESET, READ, EPOCHS) on top of the engine, a
 * latent replay buffer and a buffer of recent samples. Portable C, no OS calls: the port feeds received bytes in
 * and sends the replies through a callback.
 */
#ifndef KILOLEARN_KL_SESSION_H
#define KILOLEARN_KL_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "kilolearn/kilolearn.h"
#include "kilolearn/kl_store.h"
#include "kilolearn/kl_wlog.h" /* kl_store_t, kl_store_ram_init, kl_slots_t */
#include "kilolearn/kl_freplay.h"

#ifdef __cplusplus
extern "C" {
#endif

/* the newest protocol version (docs/protocol.md): 2 adds a window of requests in
 * flight; a version 1 frame is still answered by version 1's rules */
#define KL_PROTO_VERSION 2u
#define KL_PROTO_V1      1u
/* requests in flight at most (protocol version 2); the window a device offers
 * is what its window memory holds (kl_session_window) */
#ifndef KL_SESSION_MAX_WINDOW
#define KL_SESSION_MAX_WINDOW 16u
#endif
#if KL_SESSION_MAX_WINDOW < 1 || KL_SESSION_MAX_WINDOW > 32
#error "KL_SESSION_MAX_WINDOW: 1 to 32 (the ACK's map of held requests is 32 bits)"
#endif
#ifndef KL_SESSION_MAX_PAYLOAD
#define KL_SESSION_MAX_PAYLOAD 2048u
#endif
/* replayed latents per new sample at most (each is a training step: a bound
 * on how long one TRAIN may take) */
#define KL_SESSION_MAX_REPLAY_RATIO 100u
/* epochs over the sample buffer per EPOCHS request at most, and training steps
 * (epochs x buffered samples): a bound on how long one EPOCHS may take */
#define KL_SESSION_MAX_EPOCHS      100u
#define KL_SESSION_MAX_EPOCH_STEPS 65535u
#define KL_FRAME_HEADER 6u /* type, version, seq (u16), len (u16) */
#define KL_FRAME_CRC    4u
#define KL_FRAME_MAX    (KL_FRAME_HEADER + KL_SESSION_MAX_PAYLOAD + KL_FRAME_CRC)
/* COBS adds one byte per 254 and the delimiter */
#define KL_FRAME_WIRE_MAX (KL_FRAME_MAX + KL_FRAME_MAX / 254u + 2u)
/* bytes of window memory (kl_session_window) for a window of n requests: one
 * frame slot per request beyond the first (the session holds that one) */
#define KL_SESSION_WINDOW_BYTES(n) ((size_t)((n) - 1u) * KL_FRAME_MAX)

enum kl_cmd {
	KL_CMD_INFO = 0x01,
	KL_CMD_LOAD = 0x02,
	KL_CMD_TRAIN = 0x03,
	KL_CMD_EVAL = 0x04,
	KL_CMD_PREDICT = 0x05,
	KL_CMD_COMMIT = 0x06,
	KL_CMD_STATS = 0x07,
	KL_CMD_CONFIG = 0x08,
	KL_CMD_RESET = 0x09,
	KL_CMD_READ = 0x0A,  /* pull a blob back: the model as trained, or the stored one */
	KL_CMD_EPOCHS = 0x0B, /* train again on the buffered samples, shuffled */
	KL_CMD_REPLY = 0x80, /* reply type = command | KL_CMD_REPLY */
	KL_CMD_ACK = 0xFE, /* version 2: a request held until the ones before it arrive */
	KL_CMD_NAK = 0xFF
};

/* anomaly threshold: moving averages with weight 2^-KL_ANOMALY_SHIFT, mean +
 * KL_ANOMALY_K standard deviations (docs/protocol.md, EVAL of a MSE model) */
#define KL_ANOMALY_SHIFT 5
#define KL_ANOMALY_K     3.0f

enum kl_load_phase { KL_LOAD_BEGIN = 0, KL_LOAD_DATA = 1, KL_LOAD_END = 2 };

enum kl_cfg_key {
	KL_CFG_LR = 1,           /* f32 */
	KL_CFG_REPLAY_RATIO = 2, /* u16: replayed latents per new sample (<= 100) */
	KL_CFG_REPLAY_CAP = 3,   /* u32: latents held */
	KL_CFG_CUT = 4,          /* u16: tensor id of the replay cut (0xFFFF: none) */
	KL_CFG_SEED = 5,         /* u32 */
	KL_CFG_CLASSES = 6,      /* n bytes: 1 = class active; empty: grow as labels come */
	KL_CFG_UPDATE = 7,       /* u8 policy (kl_update_policy, 0xFF: the blob's), u16 per mille */
	KL_CFG_BUFFER = 8,       /* u32: labelled samples kept for EPOCHS (0: none) */
	KL_CFG_REPLAY_WHERE = 9  /* u8 where the latents live (kl_replay_where) [, u16 cache lines] */
};

/* where the replay buffer keeps its latents (CONFIG key 9) */
enum kl_replay_where {
	KL_REPLAY_ARENA = 0,       /* in the arena (kl_replay) */
	KL_REPLAY_FLASH = 1,       /* in the replay store (kl_freplay), a new buffer */
	KL_REPLAY_FLASH_RESUME = 2 /* in the replay store, the one it holds if its shape matches */
};
#define KL_SESSION_REPLAY_LINES 8u /* latents cached in the arena by default */

/* protocol status codes (besides the engine's KL_E*) */
#define KL_EFRAME   (-205) /* malformed frame: bad COBS, length or CRC */
#define KL_ESEQ     (-206) /* sequence number out of order */
#define KL_ENOMODEL (-207) /* no model loaded */
#define KL_ESTATE   (-208) /* command not valid now (e.g. LOAD data before BEGIN) */

typedef void (*kl_tx_fn)(void *ctx, const uint8_t *buf, size_t n);

typedef struct {
	uint8_t *arena;
	size_t arena_size;
	/* where the blob lives: generations in a ring of slots (kl_store.h); must
	 * be memory-mapped (the model reads frozen weights in place) */
	kl_store_t *store;
	kl_tx_fn tx;
	void *tx_ctx;
	uint64_t (*insn)(void); /* instruction/cycle counter, may be NULL */
	/* where a paged model (docs/paged-weights.md) logs the rows it trains: a
	 * store of its own (e.g. a kl_store_sub_init part of the partition), or
	 * NULL: paged models are refused (KL_ENOTSUP) */
	kl_store_t *log_store;
	/* where a flash replay buffer (CONFIG key 9, docs/replay.md) keeps its
	 * latents: a store region of its own, or NULL: only the arena's */
	kl_store_t *replay_store;
} kl_session_cfg_t;

/* The settings CONFIG changes (docs/protocol.md): each CONFIG states the
 * whole configuration (keys it leaves out take their defaults); it is checked
 * whole against the running model and then applied, or refused with nothing
 * changed. A LOAD and a reboot start from the defaults. */
typedef struct {
	float lr;
	uint16_t replay_ratio, cut;
	uint32_t replay_cap, seed;
	uint8_t upd_policy; /* 0xFF: the blob's own */
	uint16_t upd_permille;
	uint8_t auto_classes; /* 1: classes become active as their labels are trained */
	uint8_t class_mask[256];
	uint32_t buf_cap; /* samples kept for EPOCHS */
	uint8_t replay_where;  /* kl_replay_where */
	uint16_t replay_lines; /* a flash buffer's cache lines */
} kl_session_settings_t;

typedef struct {
	kl_session_cfg_t cfg;
	kl_arena_t arena;
	kl_model_t model;
	kl_replay_t replay;
	kl_freplay_t freplay; /* the replay buffer when set.replay_where != KL_REPLAY_ARENA */
	kl_samples_t samples; /* recent labelled samples (set.buf_cap > 0) */
	kl_slots_t slots; /* the stored generations; the model runs from slots.pin */
	kl_wlog_t wlog;   /* a paged model's weight log (on cfg.log_store) */
	int loaded;
	kl_session_settings_t set;
	/* the arena right after kl_model_init (before CONFIG's parts): where a
	 * CONFIG's trial layout starts */
	size_t init_used;
	void *init_sel;
	uint32_t init_sel_size;
	/* LOAD progress */
	uint32_t load_size, load_got;
	int loading;
	/* sequencing: the last request executed (in order) and the window: slot
	 * i (slot 0 is `reply`, the others in win) holds the cached reply of the
	 * request with seq % window == i, or a request held until the ones
	 * before it arrive (version 2) */
	int have_seq;
	uint16_t last_seq;
	uint16_t window;
	/* the newest version spoken (KL_PROTO_VERSION after kl_session_init; a
	 * port may set KL_PROTO_V1: version 2 frames then get NAK(KL_EVERSION), as
	 * from a version 1 device) */
	uint8_t max_version;
	uint8_t rx_version; /* of the request being executed */
	int have_nonce;     /* the INFO that started the sequence had a nonce (version 2) */
	uint32_t info_nonce;
	uint8_t slot_state[KL_SESSION_MAX_WINDOW];
	uint8_t *win;
	/* READ of the trained model: the training state's version and the
	 * resealed CRC computed for it */
	uint32_t state_seq, read_crc, read_crc_seq;
	int read_crc_ok;
	/* stats */
	uint32_t train_steps, replay_steps;
	uint64_t train_insn;
	/* anomaly detection (a MSE model, an autoencoder): the threshold learnt
	 * from the training stream's reconstruction errors (before each update),
	 * mean + KL_ANOMALY_K deviations, both exponential moving averages */
	float score_mean, score_var;
	uint32_t score_n;
	/* frame buffers */
	uint8_t rx[KL_FRAME_WIRE_MAX];
	size_t rx_len;
	int rx_overflow;
	/* the decoded frame, word-aligned so that a sample in it can be moved to
	 * a 4-byte boundary before the engine reads it as float */
	uint32_t frame[(KL_FRAME_MAX + 3u) / 4u];
	uint8_t reply[KL_FRAME_MAX]; /* window slot 0 */
	uint8_t wire[KL_FRAME_WIRE_MAX];
} kl_session_t;

/* the anomaly threshold the training stream's errors give (0 before any) */
float kl_sess_threshold(const kl_session_t *s);

int kl_session_init(kl_session_t *s, const kl_session_cfg_t *cfg);
/* Feed received bytes; complete frames are handled and answered at once. */
void kl_session_feed(kl_session_t *s, const uint8_t *bytes, size_t n);
/* Give the session window memory (after kl_session_init): protocol version 2
 * then lets up to 1 + size / KL_FRAME_MAX requests (at most
 * KL_SESSION_MAX_WINDOW) be in flight, the window INFO reports. Without it the
 * window is 1. Returns the window. The memory must stay the session's. */
unsigned kl_session_window(kl_session_t *s, uint8_t *mem, size_t size);

/* COBS (consistent overhead byte stuffing); return the output length, or 0
 * on malformed input / too small an output. */
size_t kl_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);
size_t kl_cobs_decode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KL_SESSION_H */
