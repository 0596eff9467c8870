/*
 * The app's weight store: the kilolearn_weights flash partition through
 * flash_area where the board has it, RAM otherwise (store.c).
 */
#ifndef KILOLEARN_APP_STORE_H
#define KILOLEARN_APP_STORE_H

#include "kilolearn/kl_session.h"

/* Set up the store (the kilolearn_weights partition, else RAM); *store
 * points at it on success. Returns 0 or -errno. */
int app_store_init(kl_store_t **store);

/* The weight log's part of the store (CONFIG_KILOLEARN_APP_WEIGHT_LOG_SIZE),
 * or NULL: then paged models are refused. After app_store_init. */
kl_store_t *app_store_log(void);

/* The replay latents' part of the store (CONFIG_KILOLEARN_APP_REPLAY_FLASH_SIZE),
 * or NULL: then a flash replay buffer is refused. After app_store_init. */
kl_store_t *app_store_replay(void);

/* Open the kilolearn_weights partition as a store (geometry from the
 * driver, memory-mapped base); 0 or -errno. With the flash store only. */
int app_store_flash_open(kl_store_t *st);

/* The power-cut test (CONFIG_KILOLEARN_APP_POWERCUT_TEST): 0 on PASS. */
int app_powercut_run(kl_session_t *s, uint8_t *arena, size_t arena_size);

/* Log the kilolearn_weights partition's geometry (0, or -errno if absent). */
int app_store_probe_partition(void);

#endif /* KILOLEARN_APP_STORE_H */
