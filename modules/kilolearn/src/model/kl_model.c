/* The model engine: layout, forward, backward, updates and the schedule
 * executor for graphs of dense / conv / depthwise / pooling / add ops ending
 * in softmax cross-entropy. Each concern is a file of its own (see
 * kl_model_priv.h); this file compiles them as one translation unit, so that
 * the compiler inlines across them as within one file. */
#include <string.h>

#include "kl_model_priv.h"
#include "kilolearn/kl_wlog.h"

/* clang-format off */
#include "kl_ops.c"
#include "kl_forward.c"
#include "kl_backward.c"
#include "kl_update.c"
#include "kl_paged.c"
#include "kl_train.c"
#include "kl_model_init.c"
/* clang-format on */
