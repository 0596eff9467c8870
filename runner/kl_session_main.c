/*
 * kl_session: the continual-learning session firmware. Bytes from the
 * console (UART on the boards, stdin on the host) go to the session core,
 * replies go back out; see docs/protocol.md. The same program runs on the
 * host and on the QEMU boards; the Zephyr app wraps the same core.
 *
 * The weight store (docs/flash-store.md):
 *   host        a RAM store, or with `--flash FILE [--geometry SIZE,ERASE,WRITE,EV]`
 *               the file-backed NOR simulation (survives a restart: the
 *               session boots with the newest committed generation);
 *               `--cut K[,SEED]` loses power at the K-th program/erase step;
 *               a paged model's weight log (docs/paged-weights.md) is the
 *               store's last BYTES with `--log BYTES`, none with `--log 0`,
 *               else a RAM store of its own (lost at exit)
 *               a flash replay buffer's latents (docs/replay.md) go to a NOR
 *               simulation in RAM of its own: `--replay BYTES` (4 KB sectors,
 *               16-byte writes; 0: none; default 1 MB), or with
 *               `--replay-file FILE` a file-backed one (kept over a restart);
 *               `--replay-cut K[,SEED]` loses its power at its K-th step
 *   QEMU mps2   the NOR simulation over PSRAM (KL_FLASH_SIM_ADDR), formatted
 *               at power-on, kept over a system reset; the weight log a NOR
 *               simulation of its own 2 MB above it, the replay latents one
 *               of 2 MB 4 MB above it
 */
#include <stdint.h>
#include <string.h>

#include "kilolearn/kl_session.h"
#include "kl_port.h"

#ifndef KL_SESSION_ARENA_SIZE
#define KL_SESSION_ARENA_SIZE (256u * 1024u)
#endif
#ifndef KL_SESSION_STORE_SIZE
#define KL_SESSION_STORE_SIZE (256u * 1024u)
#endif

/* requests in flight (protocol version 2): RAM is plenty on the host and the
 * QEMU boards, so the most the session core takes */
#ifndef KL_SESSION_WINDOW
#define KL_SESSION_WINDOW KL_SESSION_MAX_WINDOW
#endif

static uint32_t arena_mem[KL_SESSION_ARENA_SIZE / 4u];
static uint32_t window_mem[KL_SESSION_WINDOW_BYTES(KL_SESSION_WINDOW) / 4u + 1u];
static kl_session_t session;
static kl_store_t store;     /* the generations: the whole part, or its first part */
static kl_store_t log_store; /* a paged model's weight log */
static int have_log;
static kl_store_t replay_store; /* a flash replay buffer's latents */
static kl_nor_sim_t replay_nor;
static int have_replay;
#define REPLAY_SECTOR 4096u
#define REPLAY_WRITE  16u
static uint8_t proto = KL_PROTO_VERSION; /* --proto 1 (host): speak version 1 only */

#ifdef KL_BAREMETAL
/* NOR flash simulation over PSRAM: 1 MB, 16 KB sectors, 16-byte writes,
 * erased to 0xFF. A marker after the image tells a power-on (PSRAM all
 * zero: format) from a reset (keep); the wear counters follow it. */
#define FLASH_SIZE   (1024u * 1024u)
#define FLASH_SECTOR (16u * 1024u)
#define FLASH_WRITE  16u
#define FLASH_SECTORS (FLASH_SIZE / FLASH_SECTOR)
#define SIM_MAGIC 0x4D49534Eu /* "NSIM" */
#define LOG_AT    (2u * 1024u * 1024u)
#define LOG_SIZE  (1024u * 1024u)
#define REPLAY_AT   (4u * 1024u * 1024u)
#define REPLAY_SIZE (2u * 1024u * 1024u)
static kl_nor_sim_t nor;

static int store_init(int argc, char **argv)
{
	(void)argc;
	(void)argv;
	uint8_t *mem = (uint8_t *)(uintptr_t)KL_FLASH_SIM_ADDR;
	volatile uint32_t *marker = (volatile uint32_t *)(uintptr_t)(KL_FLASH_SIM_ADDR + FLASH_SIZE);
	uint32_t *wear = (uint32_t *)(uintptr_t)(KL_FLASH_SIM_ADDR + FLASH_SIZE + 16u);
	const kl_store_geom_t g = {FLASH_SIZE, FLASH_SECTOR, FLASH_WRITE, 0xFFu};
	const int err = kl_store_nor_init(&store, &nor, mem, &g);
	if (err != KL_OK) {
		return err;
	}
	const int fresh = marker[0] != SIM_MAGIC || marker[1] != FLASH_SIZE ||
			  marker[2] != FLASH_SECTOR;
	if (fresh) {
		kl_store_nor_format(&store); /* a fresh part */
		memset(wear, 0, 2u * FLASH_SECTORS * sizeof(uint32_t));
		marker[1] = FLASH_SIZE;
		marker[2] = FLASH_SECTOR;
		marker[0] = SIM_MAGIC;
	}
	kl_store_set_wear(&store, wear, wear + FLASH_SECTORS);
	/* the weight log: 1 MB of 4 KB sectors, 2 MB above the store, formatted with it */
	static kl_nor_sim_t log_nor;
	const kl_store_geom_t lg = {LOG_SIZE, 4096u, FLASH_WRITE, 0xFFu};
	if (kl_store_nor_init(&log_store, &log_nor, (uint8_t *)(uintptr_t)(KL_FLASH_SIM_ADDR + LOG_AT),
			      &lg) == KL_OK) {
		if (fresh) {
			kl_store_nor_format(&log_store);
		}
		have_log = 1;
	}
	/* the replay latents: 2 MB of 4 KB sectors, 4 MB above the store */
	const kl_store_geom_t rg = {REPLAY_SIZE, REPLAY_SECTOR, REPLAY_WRITE, 0xFFu};
	if (kl_store_nor_init(&replay_store, &replay_nor,
			      (uint8_t *)(uintptr_t)(KL_FLASH_SIM_ADDR + REPLAY_AT), &rg) == KL_OK) {
		if (fresh) {
			kl_store_nor_format(&replay_store);
		}
		have_replay = 1;
	}
	return KL_OK;
}
#else
#include <stdio.h>
#include <stdlib.h>

#include "posix/kl_store_file.h"

static kl_store_t part; /* the flash part, split by --log */
static int split;       /* it is */

/* --log: the store's last log bytes (whole sectors) become the weight log */
static int split_log(unsigned long log)
{
	if (log == 0u) {
		return KL_OK;
	}
	const uint32_t size = part.geom.size;
	const int err = log < size ? kl_store_sub_init(&log_store, &part, size - (uint32_t)log,
						       (uint32_t)log)
				   : KL_EINVAL;
	if (err != KL_OK || kl_store_sub_init(&store, &part, 0, size - (uint32_t)log) != KL_OK) {
		fprintf(stderr, "kl_session: --log %lu: not whole sectors of the %lu-byte store\n",
			log, (unsigned long)size);
		return KL_EINVAL;
	}
	have_log = split = 1;
	return KL_OK;
}

static uint32_t store_mem[KL_SESSION_STORE_SIZE / 4u];
static uint32_t ram_wear[2u * (KL_SESSION_STORE_SIZE / KL_STORE_RAM_SECTOR)];
static kl_store_file_t file_store;

#ifndef KL_SESSION_REPLAY_SIZE
#define KL_SESSION_REPLAY_SIZE (1024u * 1024u)
#endif

/* --replay BYTES: the replay latents' NOR simulation in RAM (lost at exit),
 * or in the file path (kept); power lost at its cut-th step (0: never) */
static kl_store_file_t replay_file;

static int replay_init(unsigned long size, const char *path, uint32_t cut, uint32_t seed)
{
	static uint32_t replay_mem[KL_SESSION_REPLAY_SIZE / 4u];
	if (size == 0u) {
		return KL_OK;
	}
	const kl_store_geom_t rg = {(uint32_t)size, REPLAY_SECTOR, REPLAY_WRITE, 0xFFu};
	const int err = path != NULL ? kl_store_file_open(&replay_store, &replay_file, path, &rg)
			: size > sizeof(replay_mem) ? KL_EINVAL
			: kl_store_nor_init(&replay_store, &replay_nor, (uint8_t *)replay_mem, &rg);
	if (err != KL_OK) {
		fprintf(stderr, "kl_session: --replay %lu%s%s: not whole %u-byte sectors%s (%d)\n",
			size, path != NULL ? " --replay-file " : "", path != NULL ? path : "",
			REPLAY_SECTOR, path != NULL ? ", or not a replay store of that size"
						    : " up to 1 MB", err);
		return KL_EINVAL;
	}
	if (path == NULL) {
		kl_store_nor_format(&replay_store);
	}
	kl_store_nor_cut(&replay_store, cut, seed);
	have_replay = 1;
	return KL_OK;
}

/* "K[,SEED]" */
static uint32_t parse_cut(const char *text, uint32_t *seed)
{
	char *end;
	const uint32_t k = (uint32_t)strtoul(text, &end, 0);
	if (*end == ',') {
		*seed = (uint32_t)strtoul(end + 1, NULL, 0);
	}
	return k;
}

static int store_init(int argc, char **argv)
{
	const char *path = NULL;
	unsigned long replay = KL_SESSION_REPLAY_SIZE;
	const char *replay_path = NULL;
	uint32_t replay_cut = 0, replay_seed = 0;
	kl_store_geom_t g = {1024u * 1024u, 16u * 1024u, 16u, 0xFFu};
	uint32_t cut = 0, seed = 0;
	unsigned long log = 0;
	int log_given = 0;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--flash") == 0) {
			path = argv[i + 1];
		} else if (strcmp(argv[i], "--geometry") == 0) {
			if (kl_store_geom_parse(argv[i + 1], &g) != KL_OK) {
				fprintf(stderr, "kl_session: bad --geometry %s\n", argv[i + 1]);
				return KL_EINVAL;
			}
		} else if (strcmp(argv[i], "--log") == 0) {
			char *end;
			log = strtoul(argv[i + 1], &end, 0);
			log_given = 1;
			if (*end != '\0') {
				fprintf(stderr, "kl_session: bad --log %s\n", argv[i + 1]);
				return KL_EINVAL;
			}
		} else if (strcmp(argv[i], "--proto") == 0) {
			proto = (uint8_t)strtoul(argv[i + 1], NULL, 0); /* 1: a version 1 device */
		} else if (strcmp(argv[i], "--replay") == 0) {
			char *end;
			replay = strtoul(argv[i + 1], &end, 0);
			if (*end != '\0' || argv[i + 1][0] == '-') {
				fprintf(stderr, "kl_session: bad --replay %s\n", argv[i + 1]);
				return KL_EINVAL;
			}
		} else if (strcmp(argv[i], "--replay-file") == 0) {
			replay_path = argv[i + 1];
		} else if (strcmp(argv[i], "--replay-cut") == 0) {
			replay_cut = parse_cut(argv[i + 1], &replay_seed);
		} else if (strcmp(argv[i], "--cut") == 0) {
			cut = parse_cut(argv[i + 1], &seed);
		} else {
			fprintf(stderr, "usage: kl_session [--flash FILE [--geometry SIZE,ERASE,WRITE,EV]"
					" [--cut K[,SEED]]] [--log BYTES (0: none)]"
					" [--replay BYTES (0: none) [--replay-file FILE]"
					" [--replay-cut K[,SEED]]] [--proto 1]\n");
			return KL_EINVAL;
		}
	}
	if (replay_init(replay, replay_path, replay_cut, replay_seed) != KL_OK) {
		return KL_EINVAL;
	}
	if (!log_given) { /* a RAM weight log of its own */
		static uint32_t log_mem[KL_SESSION_STORE_SIZE / 4u];
		kl_store_ram_init(&log_store, (uint8_t *)log_mem, sizeof(log_mem));
		have_log = 1;
	}
	kl_store_t *raw = log != 0u ? &part : &store; /* the whole part (drivers keep it) */
	if (path == NULL) {
		kl_store_ram_init(raw, (uint8_t *)store_mem, sizeof(store_mem));
		kl_store_set_wear(raw, ram_wear, ram_wear + kl_store_sectors(raw));
		return split_log(log);
	}
	const int err = kl_store_file_open(raw, &file_store, path, &g);
	if (err != KL_OK) {
		kl_store_geom_t had;
		if (err == KL_ESTOREFILE && kl_store_file_probe(path, &had) == KL_OK) {
			fprintf(stderr,
				"kl_session: %s holds a store of geometry %lu,%lu,%lu,0x%02X, not the "
				"one asked for; left untouched (give --geometry %lu,%lu,%lu,0x%02X "
				"or another file)\n",
				path, (unsigned long)had.size, (unsigned long)had.erase_block,
				(unsigned long)had.write_block, had.erase_value,
				(unsigned long)had.size, (unsigned long)had.erase_block,
				(unsigned long)had.write_block, had.erase_value);
		} else if (err == KL_ESTOREFILE) {
			fprintf(stderr, "kl_session: %s is not a kilolearn flash image; left "
					"untouched\n", path);
		} else {
			fprintf(stderr, "kl_session: cannot open the flash file %s (%d)\n", path,
				err);
		}
		return err;
	}
	if (cut != 0u) {
		kl_store_nor_cut(raw, cut, seed);
	}
	return split_log(log);
}
#endif

static void tx(void *ctx, const uint8_t *buf, size_t n)
{
	(void)ctx;
	kl_port_write((const char *)buf, n);
#ifdef KL_BAREMETAL
	kl_port_flush();
#endif /* the host: once the bytes read at once are handled (a window's replies, one write) */
}

#ifndef KL_BAREMETAL
#include <errno.h>
#include <unistd.h>

/* The host: what the link has (a window of frames, say) read at once, fed, and the replies
 * written together; 0 at the end of input. */
static int host_loop(void)
{
	static uint8_t chunk[4096];
	setvbuf(stdout, NULL, _IOFBF, 1u << 16); /* binary replies: no flush at a 0x0A */
	for (;;) {
		const ssize_t n = read(0, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR) {
			continue;
		}
		if (n <= 0) {
			if (file_store.f != NULL) {
				kl_store_file_close(split ? &part : &store);
			}
			if (replay_file.f != NULL) {
				kl_store_file_close(&replay_store);
			}
			return 0; /* end of input: the host closed the link */
		}
		kl_session_feed(&session, chunk, (size_t)n);
		kl_port_flush();
	}
}
#endif

int main(int argc, char **argv)
{
	if (kl_port_init(argc, argv) != 0 || store_init(argc, argv) != KL_OK) {
		return 1;
	}
	const kl_session_cfg_t cfg = {
		.arena = (uint8_t *)arena_mem,
		.arena_size = sizeof(arena_mem),
		.store = &store,
		.tx = tx,
		.tx_ctx = NULL,
		.insn = kl_port_has_counter() ? kl_port_insn : NULL,
		.log_store = have_log ? &log_store : NULL,
		.replay_store = have_replay ? &replay_store : NULL,
	};
	if (kl_session_init(&session, &cfg) != KL_OK) {
		return 1;
	}
	if (proto == KL_PROTO_V1) { /* as a version 1 device: no window, no version 2 */
		session.max_version = KL_PROTO_V1;
	} else {
		(void)kl_session_window(&session, (uint8_t *)window_mem, sizeof(window_mem));
	}
#ifdef KL_BAREMETAL
	for (;;) { /* the UART, a byte at a time (QEMU holds the rest back meanwhile) */
		const int c = kl_port_getc();
		if (c < 0) {
			return 0;
		}
		const uint8_t b = (uint8_t)c;
		kl_session_feed(&session, &b, 1u);
	}
#else
	return host_loop();
#endif
}
