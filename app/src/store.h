/*
 * The app's weight store: the one place the app touches the store, so a
 * flash_area-backed store (the kilolearn_weights partition) can replace the
 * RAM one without changes elsewhere.
 */
#ifndef KILOLEARN_APP_STORE_H
#define KILOLEARN_APP_STORE_H

#include "kilolearn/kl_session.h"

/* Set up the store; *store points at it on success. Returns 0 or -errno. */
int app_store_init(kl_store_t **store);

/* Log the kilolearn_weights partition's geometry (0, or -errno if absent). */
int app_store_probe_partition(void);

#endif /* KILOLEARN_APP_STORE_H */
