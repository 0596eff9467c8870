# The engine's sources, shared by the standalone build (top-level
# CMakeLists.txt) and the Zephyr module build (CMakeLists.txt beside this).
set(KL_ENGINE_DIR ${CMAKE_CURRENT_LIST_DIR})
set(KL_ENGINE_INCLUDE ${KL_ENGINE_DIR}/include)
set(KL_ENGINE_SOURCES
  ${KL_ENGINE_DIR}/src/kl_arena.c
  ${KL_ENGINE_DIR}/src/kl_blob.c
  ${KL_ENGINE_DIR}/src/kl_crc32.c
  ${KL_ENGINE_DIR}/src/model/kl_model.c  # includes the other src/model/*.c (one unit)
  ${KL_ENGINE_DIR}/src/kl_replay.c
  ${KL_ENGINE_DIR}/src/kl_samples.c
  ${KL_ENGINE_DIR}/src/session/kl_cobs.c
  ${KL_ENGINE_DIR}/src/session/kl_session.c
  ${KL_ENGINE_DIR}/src/session/kl_session_model.c
  ${KL_ENGINE_DIR}/src/session/kl_session_cmds.c
  ${KL_ENGINE_DIR}/src/store/kl_store.c
  ${KL_ENGINE_DIR}/src/store/kl_slots.c
  ${KL_ENGINE_DIR}/src/store/kl_wlog.c
  ${KL_ENGINE_DIR}/src/store/kl_freplay.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_quant.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_fully_connected_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_fully_connected_grad_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_fully_connected_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_fully_connected_grad_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_softmax_ce_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_softmax_ce_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_mse_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_adam_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_accumulate_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_activation_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_activation_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_mse_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_sigmoid_bce_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_sigmoid_bce_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_conv_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_conv_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_depthwise_conv_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_depthwise_conv_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_pool_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_pool_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_add_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_topr_sgd_s8.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_topr_sgd_f32.c
  ${KL_ENGINE_DIR}/src/kernels/ref/kl_fc_paired_s8.c
  ${KL_ENGINE_DIR}/src/kernels/dsp/kl_fully_connected_s8.c
  ${KL_ENGINE_DIR}/src/kernels/dsp/kl_fully_connected_sgd_s8.c
  ${KL_ENGINE_DIR}/src/kernels/dsp/kl_fully_connected_grad_s8.c
  ${KL_ENGINE_DIR}/src/kernels/dsp/kl_fully_connected_paired_s8.c
  ${KL_ENGINE_DIR}/src/kernels/dsp/kl_conv_s8.c
  ${KL_ENGINE_DIR}/src/kernels/dsp/kl_depthwise_conv_s8.c
  ${KL_ENGINE_DIR}/src/kernels/dsp/kl_sgd_weights_s8.c
  ${KL_ENGINE_DIR}/src/kernels/fpu/kl_fully_connected_f32.c
  ${KL_ENGINE_DIR}/src/kernels/fpu/kl_fully_connected_grad_f32.c
  ${KL_ENGINE_DIR}/src/kernels/fpu/kl_fully_connected_sgd_f32.c
  ${KL_ENGINE_DIR}/src/kernels/fpu/kl_softmax_ce_f32.c
  ${KL_ENGINE_DIR}/src/kernels/mve/kl_fully_connected_s8.c
  ${KL_ENGINE_DIR}/src/kernels/mve/kl_fully_connected_grad_s8.c
  ${KL_ENGINE_DIR}/src/kernels/mve/kl_fully_connected_sgd_s8.c
  ${KL_ENGINE_DIR}/src/kernels/mve/kl_depthwise_conv_s8.c
  ${KL_ENGINE_DIR}/src/kernels/mve/kl_depthwise_conv_grad_s8.c
)
# The CMSIS-NN backend (forward int8 kernels through CMSIS-NN), built only with
# CMSIS-NN present; compiled with KL_KERNELS_CMSIS_NN=1 and CMSIS-NN's Include/.
set(KL_ENGINE_CMSIS_NN_SOURCES
  ${KL_ENGINE_DIR}/src/kernels/cmsis_nn/kl_fully_connected_s8.c
  ${KL_ENGINE_DIR}/src/kernels/cmsis_nn/kl_conv_s8.c
  ${KL_ENGINE_DIR}/src/kernels/cmsis_nn/kl_depthwise_conv_s8.c
)
