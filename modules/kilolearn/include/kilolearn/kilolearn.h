/*
 * kilolearn: on-device training for microcontrollers. Public engine API.
 *
 * The engine is portable C99: no malloc (one caller-provided arena), no OS
 * calls, negative errno-style return codes. A model comes from a .klm blob
 * (see kl_blob.h); it may live in flash and is read in place, only what
 * training writes is copied into the arena.
 */
#ifndef KILOLEARN_KILOLEARN_H
#define KILOLEARN_KILOLEARN_H

#include <stddef.h>
#include <stdint.h>

#include "kilolearn/kl_blob.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes. The errno-like ones carry the usual numbers on every libc. */
#define KL_OK        0
#define KL_ENOMEM    (-12)  /* arena too small */
#define KL_EINVAL    (-22)  /* bad argument */
#define KL_ENOTSUP   (-134) /* valid, but not supported by this build */
#define KL_EBUSY     (-16)  /* the weight store is being written (a LOAD): not now */
#define KL_EBADMAGIC (-200) /* not a kilolearn blob */
#define KL_EVERSION  (-201) /* blob format version not supported */
#define KL_ETRUNC    (-202) /* blob shorter than its header says */
#define KL_ECRC      (-203) /* CRC mismatch: corrupted blob */
#define KL_ECORRUPT  (-204) /* CRC fine but contents inconsistent */

#define KL_MAX_TENSORS 1024 /* sanity caps of the blob parser */
#define KL_MAX_OPS     1024

/* ---- arena ---------------------------------------------------------------- */
typedef struct kl_arena {
	uint8_t *base;
	size_t size;
	size_t used;
	size_t peak; /* high-water mark in bytes */
	/* an optional second memory region (kl_arena_set_far), e.g. the SRAM
	 * beside an STM32F4's CCM: a schedule's planned region goes there (a
	 * split one, blob 2.7: its part below the boundary; the rest after the
	 * static part in this arena) */
	struct kl_arena *far;
	size_t far_mark; /* used when the far region got its first buffer */
} kl_arena_t;

void kl_arena_init(kl_arena_t *a, void *mem, size_t size);
void *kl_arena_alloc(kl_arena_t *a, size_t size, size_t align);
void kl_arena_reset(kl_arena_t *a, size_t mark);
/* Give the arena a second memory region (initialised with kl_arena_init;
 * NULL: none). Only kl_arena_alloc_far allocates there; without one it is
 * kl_arena_alloc, so a single-region arena behaves exactly as before. */
void kl_arena_set_far(kl_arena_t *a, kl_arena_t *far);
/* A buffer in the far region if the arena has one, else in the arena. A
 * reset of the arena to a mark at or below where the far region got its
 * first buffer frees the far region too. */
void *kl_arena_alloc_far(kl_arena_t *a, size_t size, size_t align);

/* ---- model ---------------------------------------------------------------- */
struct kl_wlog;
typedef struct {
	uint16_t h, w, c;
	int8_t exp, zp;      /* s8: power-of-two scale exponent and zero point */
	uint16_t n_users;    /* ops that read this tensor (up to 2 * KL_MAX_OPS: no wrap) */
	uint8_t need_grad;   /* backprop needs its gradient */
	uint8_t has_grad;    /* a gradient arrived in this backward pass */
	int8_t grad_exp;     /* s8: exponent of grad */
	int16_t producer;    /* op index, -1 for the input */
	void *data;          /* activations (the input: the caller's buffer) */
	void *grad;          /* gradient (float or int8), if need_grad */
} kl_tensor_t;

/* Partial activations (KL_UPDATE_PARTIAL, int8), per tensor: only a block of
 * pk of its c channels is kept after its consumer's forward step, packed
 * (channels [pc0, pc0 + pk) at each position), and only that block gets a
 * gradient. pk = 0: the whole tensor. */
typedef struct {
	uint16_t pk, pc0;
	void *full; /* where the forward pass writes it whole: a shared slot, or NULL
		     * (then in place: packed to the start of its own buffer) */
	void *kept; /* where the block is packed to */
} kl_part_t;

typedef struct {
	uint8_t kind, act, flags, stride;
	uint8_t kh, kw, pad_t, pad_l, pad_b, pad_r;
	int8_t w_exp, b_exp;
	uint16_t in0, in1, out;
	uint8_t sat;      /* s8: an output saturated in the last forward pass */
	uint32_t n_w;     /* weight count */
	void *w;          /* f32: float, s8: int8_t */
	void *b;          /* f32: float, s8: int32_t */
	void *vw, *vb;    /* f32 momentum or Adam's first moments (float); s8 momentum
			   * velocity (int32, exponents v_exp, vb_exp); or NULL */
	void *gw, *gb;    /* kept gradients (KL_CFG_KEEP_GRADS), or the batch's sums
			   * (batch > 1): f32 float, s8 int32 */
	int8_t gw_exp, gb_exp;
	int8_t v_exp, vb_exp;
	/* paged (KL_OP_PAGED): per output row, its latest copy in the weight log
	 * (weights, then the bias at the next 4-byte boundary), or NULL while the
	 * row is the blob's (w, b read in place) */
	const uint8_t **rows;
	float *sw, *sb;   /* Adam's second moments (or NULL) */
} kl_op_t;

/* Phases of a training step, for an optional profiling hook */
enum kl_phase {
	KL_PHASE_FORWARD = 0,
	KL_PHASE_LOSS = 1,     /* loss gradient w.r.t. the logits */
	KL_PHASE_BACKWARD = 2, /* masks and input gradients */
	KL_PHASE_UPDATE = 3,   /* weight gradients and the update */
	KL_PHASE_DONE = 4,
	KL_PHASE_COUNT = 5
};
typedef void (*kl_phase_hook_t)(void *ctx, int phase);

#define KL_CFG_KEEP_GRADS 0x01u /* kl_compute_grads()/kl_apply_grads() usable */

/* Optimisers (docs/int8-training.md): SGD (with momentum: float32 and int8),
 * Adam (float32). */
enum kl_optimizer { KL_OPT_SGD = 0, KL_OPT_ADAM = 1 };

typedef struct {
	float lr;       /* learning rate (int8: used as a Q12 fixed-point number) */
	float momentum; /* 0 = plain SGD (int8: used as a Q15 number) */
	uint32_t seed;  /* start of the int8 update dither */
	uint32_t flags; /* KL_CFG_* */
	/* since issue 20 (zero: the defaults) */
	uint8_t optimizer;   /* enum kl_optimizer */
	uint16_t batch;      /* samples per update (gradients summed, their mean applied);
			      * 0 or 1: every step; int8: a power of two */
	float beta1, beta2;  /* Adam: 0.9, 0.999 when 0 */
	float eps;           /* Adam: 1e-8 when 0 */
} kl_train_cfg_t;

typedef struct {
	uint8_t dtype;
	uint16_t n_tensors, n_ops, input, output;
	uint16_t n_inputs, n_classes; /* element counts of input and logits */
	int8_t lut_exp;
	const uint16_t *lut; /* s8 softmax table, in the blob */
	kl_tensor_t *tensors; /* in the arena */
	kl_op_t *ops;         /* in the arena */
	void *scratch;        /* int32 accumulators (input and weight gradients) */
	uint32_t scratch_size;
	void *kscratch;       /* kernel scratch (im2col, transposes) */
	uint32_t kscratch_size;
	int8_t logits_grad_exp;
	float lr, momentum;
	int32_t lr_q;
	uint32_t dither;
	uint32_t flags;
	kl_arena_t *arena;
	kl_phase_hook_t hook; /* called as each phase starts, if set */
	void *hook_ctx;
	const uint8_t *class_mask; /* active classes (1 per class), NULL = all */
	/* training with a schedule (blob 2.1): steps executed one by one, every
	 * activation and gradient at its planned offset in one region */
	const uint8_t *sched;  /* first step record in the blob, NULL = store-all */
	uint32_t n_steps;
	uint8_t *region;       /* in the arena (its second memory region where it has one) */
	uint32_t region_size;
	/* blob 2.7: offsets at or above region_split (not 0) are in region_hi, the
	 * region's second part (the arena, after the static part) */
	uint32_t region_split;
	uint8_t *region_hi;
	/* selective updates (docs/selective-updates.md) */
	uint8_t upd_policy;    /* enum kl_update_policy */
	uint16_t upd_frac;     /* fraction updated, per mille (1..1000) */
	uint32_t upd_step;     /* training steps since the policy was set */
	void *sel;             /* selection scratch, in the arena */
	uint32_t sel_size;
	uint64_t upd_touched;  /* weights the policy let the updates write, summed over steps */
	uint64_t upd_weights;  /* trainable weights, summed over steps (the 100 % figure) */
	kl_part_t *part;       /* per tensor, in the arena once KL_UPDATE_PARTIAL was set */
	uint16_t part_pm;      /* KL_UPDATE_PARTIAL laid out at init with this fraction (the
				* blob's policy): kept blocks and slots sized for it; 0 = no */
	/* paged weights (docs/paged-weights.md) */
	const uint8_t *blob;   /* the blob the model reads in place */
	uint32_t blob_len;
	uint8_t paged;         /* some op has KL_OP_PAGED */
#if defined(KL_KERNELS_CMSIS_NN) && KL_KERNELS_CMSIS_NN
	/* per op, its CMSIS-NN parameter block in the arena (int8 dense, conv and
	 * depthwise ops read whole; else NULL): KL_CMSIS_PREP_BYTES */
	int32_t **cmsis;
#endif
	struct kl_wlog *wlog;  /* where updated rows go (kl_model_attach_wlog) */
	int pg_err;            /* the last step's weight-log error, if any */
	uint32_t seed;         /* cfg->seed: where the int8 dither starts */
	/* the loss (blob 2.5, enum kl_loss) and the target of the step running:
	 * float[n_classes] (f32) or int8_t[n_classes] (s8: quantised as the
	 * input, MSE; 0 / nonzero, BCE); NULL: the label's (BCE) or the input
	 * (MSE: an autoencoder) */
	uint8_t loss;
	const void *target;
	float loss_f32;        /* f32: the last step's loss */
	uint32_t err_mant;     /* s8 MSE: the last step's error before its update */
	int8_t err_exp;        /* (kl_mse_err_s8: sum of squares = err_mant 2^err_exp) */
	/* optimiser state (issue 20): updates deferred to kl_step_* when Adam, int8
	 * momentum or a batch > 1 is configured */
	uint8_t optimizer, defer;
	uint16_t batch, batch_n; /* samples per update; summed so far */
	int32_t mom_q;           /* s8 momentum, Q15 */
	float beta1, beta2, eps, b1t, b2t; /* Adam; b1t, b2t: beta^t */
	uint32_t n_updates;      /* updates applied (Adam's t) */
} kl_model_t;

/* Selective updates: which weights an SGD step writes (docs/selective-updates.md).
 * The fraction applies per trainable layer with weights; biases of bias-only
 * layers always train. */
enum kl_update_policy {
	KL_UPDATE_ALL = 0,            /* every weight, every step */
	KL_UPDATE_TOPR = 1,           /* Kwon & Park: the r largest |weight updates| of each layer */
	KL_UPDATE_CHANNEL_NORM = 2,   /* Deutel et al.: the output channels with the largest
				       * gradient norm this step (weights and biases) */
	KL_UPDATE_CHANNEL_SPARSE = 3, /* Paissan et al.: a rotating block of output channels of
				       * each dense/conv layer backpropagates; the others' weight-
				       * and input-gradient work is skipped */
	KL_UPDATE_PARTIAL = 4,        /* Paissan et al., partial activations (int8): each conv
				       * layer's input keeps a rotating block of its channels after
				       * the forward step; the gradient flows through those channels
				       * only, and each conv layer updates the weights joining its
				       * kept input block to its output's block */
	KL_UPDATE_POLICY_COUNT = 5
};
#define KL_UPDATE_FRAC_ONE 1000u /* fractions are per mille */

/* Parse and check a blob, then lay the model out in the arena (weights of
 * trainable layers are copied, frozen ones are read in place from the blob,
 * which must stay valid). cfg may be NULL for inference only. A blob with a
 * schedule (format 2.1), trained (cfg != NULL), gets one region of the
 * planned size after the scratch instead of a buffer per tensor; its steps
 * run kl_train_step / kl_compute_grads / kl_predict (docs/planner.md), and
 * kl_train_step_from is KL_ENOTSUP. */
int kl_model_init(kl_model_t *m, const uint8_t *blob, size_t len, kl_arena_t *arena,
		  const kl_train_cfg_t *cfg);

/* Set the update policy of a training model (overrides the blob's, format
 * 2.2) and restart its step count; permille in [1, 1000] (ignored for
 * KL_UPDATE_ALL). Selection scratch comes from the model's arena (allocated
 * once, grown when a policy needs more). KL_EINVAL for a bad policy or
 * fraction, KL_ENOTSUP with momentum, KL_ENOMEM when the arena is full.
 * KL_UPDATE_PARTIAL: int8 without a schedule, kept gradients or paged ops
 * (else KL_ENOTSUP); its memory saving needs the policy in the blob (laid out
 * at init); a model laid out so takes no other policy or fraction
 * (KL_ENOTSUP). Set at run time it keeps each tensor's own buffer. */
int kl_model_set_update_policy(kl_model_t *m, int policy, uint32_t permille);

/* Paged models (docs/paged-weights.md): the weights of KL_OP_PAGED ops stay
 * in the weight store, read in place; a training step appends the rows it
 * changes to a weight log (kl_wlog.h) as one transaction. Attach mounts the
 * log (its committed rows replace the blob's) and must precede training;
 * the blob must be the log's generation (KL_EINVAL otherwise). Update
 * policies: all or KL_UPDATE_CHANNEL_NORM (rows); others are KL_ENOTSUP. */
int kl_model_attach_wlog(kl_model_t *m, struct kl_wlog *lg);
/* Back to the weights of the blob the model reads (its generation): a reset
 * record in the log (power-safe: written or not), the logged rows and the
 * int8 state dropped. */
int kl_model_discard_log(kl_model_t *m);
/* Write the blob with the logged rows over it as a new generation (the
 * log's kl_slots), read it in place from then on and restart the log. A
 * training step folds by itself when the log cannot take the step. */
int kl_model_fold(kl_model_t *m);

/* n bytes at off of the blob as the model has it now: a paged model's
 * logged rows over the blob's (the header's CRC field as stored). KL_EINVAL
 * outside the blob. */
int kl_model_blob_read(const kl_model_t *m, uint32_t off, uint8_t *buf, uint32_t n);
/* n bytes at off of op i's weights as the blob lays them out (a trained
 * int8 dense layer may be kept in the paired layout in the arena,
 * docs/kernels.md). KL_EINVAL outside them. */
int kl_model_op_weights(const kl_model_t *m, int i, uint32_t off, void *buf, uint32_t n);

/* Only check a blob (header, CRC, every table entry). */
int kl_blob_check(const uint8_t *blob, size_t len);

/* Forward pass; x is float[n_inputs] (f32 models) or int8_t[n_inputs] (s8).
 * Returns the predicted class (>= 0) or a negative error code. */
int kl_predict(kl_model_t *m, const void *x);

/* One SGD step on (x, label): forward, backward, update, fused. Returns the
 * predicted class before the update (>= 0) or a negative error code. */
int kl_train_step(kl_model_t *m, const void *x, int label);

/* A step on a target vector instead of a label (losses MSE and sigmoid BCE,
 * blob 2.5): target is float[n_classes] (f32 models) or int8_t[n_classes]
 * (s8: MSE targets in the input tensor's scale and zero point, BCE targets 0
 * or nonzero); NULL means the input itself (MSE, an autoencoder: n_inputs ==
 * n_classes) or, for BCE, KL_EINVAL. KL_EINVAL with softmax cross-entropy.
 * kl_train_step on a MSE model trains toward the input (label ignored), on a
 * BCE model toward onehot(label) (label in [0, 1] with one output). */
int kl_train_step_target(kl_model_t *m, const void *x, const void *target);
int kl_compute_grads_target(kl_model_t *m, const void *x, const void *target);

/* The reconstruction error of the last forward pass against target (NULL: the
 * input x it ran on; MSE models): sum of squared differences in real units,
 * as mant * 2^*exp (s8: the integer rule of kl_mse_err_s8; f32: mant holds
 * the float's bits, exp 0 -- use kl_error_f32). */
int kl_error_s8(const kl_model_t *m, const void *x, const void *target, uint32_t *mant,
		int *exp);
int kl_error_f32(const kl_model_t *m, const void *x, const void *target, float *err);

/* The same step in two halves, with the gradients kept in the ops' gw/gb
 * (needs KL_CFG_KEEP_GRADS): f32 gw = dL/dW, gb = dL/db; s8 int32 sums of
 * dy*(x - zp) with scale 2^gw_exp and of dy with scale 2^gb_exp. */
int kl_compute_grads(kl_model_t *m, const void *x, int label);
int kl_apply_grads(kl_model_t *m);

/* Forward from tensor t (its activations replaced by data, e.g. a stored
 * latent) to the logits, then backward and update as kl_train_step. Only
 * ops after t's producer run; they may read no tensor made before t.
 * Returns the predicted class or a negative error code. */
int kl_train_step_from(kl_model_t *m, int t, const void *data, int label);

/* Is every op after t's producer fed only by t and later tensors (a valid
 * cut for latent replay)? KL_OK or KL_EINVAL. */
int kl_model_check_cut(const kl_model_t *m, int t);

/* Logits of the last forward pass (float* or int8_t*). */
const void *kl_logits(const kl_model_t *m);

const char *kl_strerror(int err);

/* ---- latent replay ---------------------------------------------------------- */
/* A class-balanced reservoir of latents (activations of a cut tensor of a
 * frozen backbone) with their labels, in the arena. */
typedef struct {
	uint8_t *data;      /* cap latents of elem bytes, stride bytes apart (4-aligned) */
	uint16_t *labels;   /* cap */
	uint16_t *stored;   /* per class: latents held */
	uint32_t *seen;     /* per class: latents offered */
	uint32_t cap, count, elem, stride;
	uint16_t n_classes;
	uint32_t rng;       /* xorshift32 state */
} kl_replay_t;

int kl_replay_init(kl_replay_t *r, kl_arena_t *a, uint32_t cap, uint32_t elem,
		   uint16_t n_classes, uint32_t seed);
/* The allocations of kl_replay_init alone (nothing written to the arena's
 * memory): on a copy of an arena it tells whether a buffer would fit.
 * KL_ENOMEM when cap * elem does not fit the arena (checked in 64 bits). */
int kl_replay_reserve(kl_replay_t *r, kl_arena_t *a, uint32_t cap, uint32_t elem,
		      uint16_t n_classes);
/* Offer a latent: kept while there is room, then it replaces a random latent
 * of the most represented class (or, if its own class is among those, a
 * random latent of its class with probability stored/seen). Returns the slot
 * written, or -1 when the latent was not kept. */
int kl_replay_add(kl_replay_t *r, const void *latent, int label);
/* kl_replay_add without the copy: the reservoir's bookkeeping (seen, stored,
 * labels, count, generator) for an offer of class label; the caller keeps the
 * latent of the slot returned (>= 0), e.g. in flash (kl_freplay.h). */
int kl_replay_choose(kl_replay_t *r, int label);
/* kl_replay_reserve without the latents (data NULL): labels and counts only */
int kl_replay_reserve_meta(kl_replay_t *r, kl_arena_t *a, uint32_t cap, uint32_t elem,
			   uint16_t n_classes);
/* A uniformly drawn slot, or -1 when empty. */
int kl_replay_pick(kl_replay_t *r);
const void *kl_replay_latent(const kl_replay_t *r, int slot);
void kl_replay_clear(kl_replay_t *r);
uint32_t kl_replay_rand(kl_replay_t *r);
/* The generator of replay and sample buffers: xorshift32 (13, 17, 5). */
uint32_t kl_xorshift32(uint32_t *state);

/* ---- sample buffer: on-device epochs -------------------------------------- */
/* The most recent cap labelled samples (model inputs) in a ring in the arena,
 * revisited in shuffled epochs (kl_samples.c). */
#define KL_SAMPLES_MAX 65535u
typedef struct {
	uint8_t *data;    /* cap samples of elem bytes, stride bytes apart (4-aligned) */
	uint16_t *labels; /* cap */
	uint16_t *order;  /* cap: the visiting order of the last epoch */
	uint32_t cap, count, next, elem, stride;
	uint32_t rng;     /* xorshift32 state */
} kl_samples_t;

/* cap (1..KL_SAMPLES_MAX) samples of elem bytes: KL_ENOMEM when they do not fit
 * the arena (sizes checked in 64 bits). _reserve only allocates (nothing
 * written: on a copy of an arena it tells whether the buffer fits). */
int kl_samples_reserve(kl_samples_t *b, kl_arena_t *a, uint32_t cap, uint32_t elem);
int kl_samples_init(kl_samples_t *b, kl_arena_t *a, uint32_t cap, uint32_t elem, uint32_t seed);
/* Keep a sample (elem bytes) and its label; when full it replaces the oldest. */
void kl_samples_add(kl_samples_t *b, const void *x, int label);
/* Sample of slot (< count) and its label. */
const void *kl_samples_get(const kl_samples_t *b, uint32_t slot, int *label);
/* A new epoch's order: order[0..count) a Fisher-Yates shuffle of the slots
 * (i from count down to 2: j = xorshift32 % i, swap order[i-1], order[j]).
 * Returns count. */
uint32_t kl_samples_shuffle(kl_samples_t *b);
/* One epoch: a shuffle, then a training step on every buffered sample in that
 * order. Returns the steps taken (correct: predictions before each update
 * that were right) or a negative error code. */
int kl_samples_epoch(kl_samples_t *b, kl_model_t *m, uint32_t *correct);

#ifdef __cplusplus
}
#endif
#endif /* KILOLEARN_KILOLEARN_H */
