/* The session core's parts (internal):
 *   kl_session.c        frames in (COBS, CRC, sequencing), dispatch, replies out
 *   kl_session_model.c  the model from the stored blob, settings, LOAD, CONFIG, INFO
 *   kl_session_cmds.c   TRAIN, EPOCHS, EVAL, PREDICT, STATS, COMMIT, READ
 * Each command fills the reply payload after the status and returns its
 * length (>= 0), or a negative status. */
#ifndef KL_SESSION_PRIV_H
#define KL_SESSION_PRIV_H

#include <stdint.h>

#include "kilolearn/kl_blob.h"
#include "kilolearn/kl_session.h"
#include "../kl_blob_read.h" /* kl_rd16, kl_rd32, kl_wr16, kl_wr32 */

/* kl_session_model.c */
void kl_sess_defaults(kl_session_settings_t *c);
int kl_sess_build_model(kl_session_t *s, const uint8_t *blob, uint32_t len);
int kl_sess_start_model(kl_session_t *s);
void kl_sess_resume_model(kl_session_t *s);
int kl_sess_blob_check(const uint8_t *blob, size_t len);
uint32_t kl_sess_sample_bytes(const kl_session_t *s);
uint32_t kl_sess_active_classes(const kl_session_t *s);
uint64_t kl_sess_now(const kl_session_t *s);
int kl_sess_cmd_info(kl_session_t *s, uint8_t *out);
int kl_sess_cmd_load(kl_session_t *s, const uint8_t *p, uint32_t n);
int kl_sess_cmd_config(kl_session_t *s, const uint8_t *p, uint32_t n);
/* kl_session_cmds.c */
int kl_sess_cmd_train(kl_session_t *s, uint8_t *p, uint32_t n, uint8_t *out);
int kl_sess_cmd_eval(kl_session_t *s, uint8_t *p, uint32_t n, uint8_t *out, int predict);
int kl_sess_cmd_stats(kl_session_t *s, uint8_t *out);
int kl_sess_cmd_commit(kl_session_t *s);
int kl_sess_cmd_read(kl_session_t *s, const uint8_t *p, uint32_t n, uint8_t *out);
int kl_sess_cmd_epochs(kl_session_t *s, const uint8_t *p, uint32_t n, uint8_t *out);

#endif /* KL_SESSION_PRIV_H */
