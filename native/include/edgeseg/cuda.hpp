// CUDA pre/post-processing (library edgeseg_cuda): the CPU functions of runtime.hpp on device
// memory, bit-identical to them (built with --fmad=false, the same float expressions).
// Pointers are device pointers on GPU `device`; `stream` is a cudaStream_t of that device (nullptr = its
// legacy default stream). Each call makes `device` current (cudaSetDevice) for the launch and restores the
// caller's current device after, so a thread serving several GPUs needs no cudaSetDevice of its own.
// The calls enqueue work and return; errors (a bad device, the launch) throw edgeseg::Error.
#pragma once

#include "edgeseg/runtime.hpp"

namespace edgeseg {
namespace cuda {

// frame.data (and frame.uv for NV12) point to device memory; see edgeseg::preprocess.
void preprocess(const Frame& frame, const Preprocessing& p, int net_h, int net_w, float* chw, void* stream,
                int device);

// See edgeseg::labels_from_logits.
void labels_from_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, uint8_t* labels,
                        void* stream, int device);

}  // namespace cuda
}  // namespace edgeseg
