// CUDA versions of image_ops.cpp. Each thread computes one output pixel with the same taps, float
// expressions and rounding as the CPU code; built with --fmad=false, so the only fused multiply-adds
// are the explicit fmaf calls that mirror the CPU's std::fma.
#include <cuda_runtime.h>

#include <string>

#include "edgeseg/cuda.hpp"

namespace edgeseg {
namespace cuda {

namespace {

struct Tap {
  int i0, i1;
  float w0, w1;
};

__device__ inline Tap linear_tap(int d, int in, int out) {
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  float real = fmaf(scale, static_cast<float>(d) + 0.5f, -0.5f);
  if (real < 0) real = 0;
  int i0 = min(static_cast<int>(real), in - 1);
  float w1 = fminf(fmaxf(real - static_cast<float>(i0), 0.0f), 1.0f);
  return {i0, i0 + (i0 < in - 1 ? 1 : 0), 1.0f - w1, w1};
}

// The CPU's bilinear() (image_ops.cpp): the same explicit fused multiply-adds.
__device__ inline float bilinear(float p00, float p01, float p10, float p11, const Tap& tx, const Tap& ty) {
  const float top = fmaf(p00, tx.w0, p01 * tx.w1);
  const float bottom = fmaf(p10, tx.w0, p11 * tx.w1);
  return fmaf(top, ty.w0, bottom * ty.w1);
}

struct FrameView {
  const uint8_t* data;
  const uint8_t* uv;
  int width, height, format;  // 0 RGB, 1 BGR, 2 NV12
  size_t stride;
};

__device__ inline uint8_t sat(int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); }

// RGB channel c of frame pixel (x, y).
__device__ inline float pixel(const FrameView& f, int x, int y, int c) {
  if (f.format == 2) {
    const int CY = 1220542, CUB = 2116026, CUG = -409993, CVG = -852492, CVR = 1673527, SHIFT = 20;
    const uint8_t* uvrow = f.uv + (y / 2) * f.stride;
    int u = int(uvrow[x & ~1]) - 128, v = int(uvrow[(x & ~1) + 1]) - 128;
    int yy = max(0, int(f.data[y * f.stride + x]) - 16) * CY;
    int off = c == 0 ? CVR * v : c == 1 ? CVG * v + CUG * u : CUB * u;
    return static_cast<float>(sat((yy + (1 << (SHIFT - 1)) + off) >> SHIFT));
  }
  const int src = f.format == 1 ? 2 - c : c;
  return static_cast<float>(f.data[y * f.stride + 3 * x + src]);
}

__global__ void preprocess_kernel(FrameView f, int net_h, int net_w, float3 mean, float3 stdv, float scale, bool bgr,
                                  float* chw) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= net_w || y >= net_h) return;
  const bool resize = net_h != f.height || net_w != f.width;
  const Tap ty = resize ? linear_tap(y, f.height, net_h) : Tap{y, y, 1.0f, 0.0f};
  const Tap tx = resize ? linear_tap(x, f.width, net_w) : Tap{x, x, 1.0f, 0.0f};
  const size_t n = static_cast<size_t>(net_h) * net_w;
  for (int c = 0; c < 3; ++c) {
    const int rc = bgr ? 2 - c : c;  // network channel c reads RGB channel rc
    float value;
    if (resize) {
      float r = floorf(0.5f + bilinear(pixel(f, tx.i0, ty.i0, rc), pixel(f, tx.i1, ty.i0, rc), pixel(f, tx.i0, ty.i1, rc),
                               pixel(f, tx.i1, ty.i1, rc), tx, ty));
      value = r < 0 ? 0 : (r > 255 ? 255 : r);
    } else {
      value = pixel(f, x, y, rc);
    }
    const float m = c == 0 ? mean.x : c == 1 ? mean.y : mean.z;
    const float s = c == 0 ? stdv.x : c == 1 ? stdv.y : stdv.z;
    float v = value * scale;
    v -= m;
    chw[c * n + static_cast<size_t>(y) * net_w + x] = v / s;
  }
}

__global__ void labels_kernel(const float* logits, int classes, int h, int w, int out_h, int out_w, uint8_t* labels) {
  const int x = blockIdx.x * blockDim.x + threadIdx.x, y = blockIdx.y * blockDim.y + threadIdx.y;
  if (x >= out_w || y >= out_h) return;
  const bool resize = h != out_h || w != out_w;
  const Tap ty = resize ? linear_tap(y, h, out_h) : Tap{y, y, 1.0f, 0.0f};
  const Tap tx = resize ? linear_tap(x, w, out_w) : Tap{x, x, 1.0f, 0.0f};
  float best = 0;
  int arg = 0;
  for (int c = 0; c < classes; ++c) {
    const float* plane = logits + static_cast<size_t>(c) * h * w;
    float v;
    if (resize) {
      v = bilinear(plane[ty.i0 * w + tx.i0], plane[ty.i0 * w + tx.i1], plane[ty.i1 * w + tx.i0],
                   plane[ty.i1 * w + tx.i1], tx, ty);
    } else {
      v = plane[y * w + x];
    }
    if (c == 0 || v > best || (isnan(v) && !isnan(best))) {
      best = v;
      arg = c;
    }
  }
  labels[static_cast<size_t>(y) * out_w + x] = static_cast<uint8_t>(arg);
}

// Makes `device` current for the lifetime of the guard and restores the caller's device after (cudaSetDevice
// is per host thread: without it a call from a thread whose current device is another GPU launches there).
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) previous_ = -1;
    cudaError_t e = cudaSetDevice(device);
    if (e != cudaSuccess) {
      cudaGetLastError();  // clear it (not sticky), so a later check_launch does not report it
      throw Error("cudaSetDevice(" + std::to_string(device) + ") failed (" + cudaGetErrorString(e) +
                  "); pass the index of the GPU that holds the buffers");
    }
  }
  ~DeviceGuard() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_ = -1;
};

void check_launch(const char* what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess)
    throw Error(std::string("CUDA ") + what + " launch failed (" + cudaGetErrorString(e) +
                "); check the device pointers and the GPU");
}

dim3 grid_for(int w, int h, dim3 block) { return dim3((w + block.x - 1) / block.x, (h + block.y - 1) / block.y); }

}  // namespace

void preprocess(const Frame& frame, const Preprocessing& p, int net_h, int net_w, float* chw, void* stream,
                int device) {
  const bool resize = net_h != frame.height || net_w != frame.width;
  if (resize && p.resize != ResizeMode::Bilinear)
    throw Error("this bundle's preprocessing uses the legacy PIL bilinear resize, which the native runtime does "
                "not implement, and the frame differs from the network input; rebuild the bundle with a current "
                "edgeseg (edgeseg build) or pass frames of the network size");
  FrameView f{frame.data, frame.uv, frame.width, frame.height,
              frame.format == PixelFormat::RGB ? 0 : frame.format == PixelFormat::BGR ? 1 : 2, frame.stride};
  if (f.format == 2) {
    if (!f.stride) f.stride = static_cast<size_t>(frame.width);
    if (!f.uv) f.uv = f.data + f.stride * frame.height;
  } else if (!f.stride) {
    f.stride = static_cast<size_t>(frame.width) * 3;
  }
  const DeviceGuard on(device);
  const dim3 block(32, 8);
  preprocess_kernel<<<grid_for(net_w, net_h, block), block, 0, static_cast<cudaStream_t>(stream)>>>(
      f, net_h, net_w, make_float3(p.mean[0], p.mean[1], p.mean[2]), make_float3(p.std[0], p.std[1], p.std[2]),
      p.scale, p.network_bgr, chw);
  check_launch("preprocess");
}

void labels_from_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, uint8_t* labels,
                        void* stream, int device) {
  if (classes < 1 || classes > 256)
    throw Error("expected 1 to 256 classes for an 8-bit class map, got " + std::to_string(classes));
  const DeviceGuard on(device);
  const dim3 block(32, 8);
  labels_kernel<<<grid_for(out_w, out_h, block), block, 0, static_cast<cudaStream_t>(stream)>>>(
      logits, classes, h, w, out_h, out_w, labels);
  check_launch("labels_from_logits");
}

}  // namespace cuda
}  // namespace edgeseg
