// ctest "cuda_vs_cpu": the CUDA kernels against the CPU implementation on random frames and logits
// (RGB, BGR, NV12; resize up, down and none), on every GPU with the current device left at 0; a bad device
// index throws; the caller's current device is restored. Exit 77 (skipped) when no CUDA GPU is present.
#include <cuda_runtime.h>

#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "edgeseg/cuda.hpp"

static int failures = 0;

template <typename T>
static T* to_device(const std::vector<T>& v) {
  T* p = nullptr;
  cudaMalloc(&p, v.size() * sizeof(T));
  cudaMemcpy(p, v.data(), v.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}
template <typename T>
static std::vector<T> to_host(const T* p, size_t n) {
  std::vector<T> v(n);
  cudaMemcpy(v.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost);
  return v;
}

// The kernels on GPU `device` against the CPU code, called from a thread whose current device is 0.
static void compare_on(int device) {
  cudaSetDevice(device);  // the buffers live on `device`
  std::mt19937 rng(3);
  edgeseg::Preprocessing p;
  p.mean = {0.485f, 0.456f, 0.406f};
  p.std = {0.229f, 0.224f, 0.225f};
  p.resize = edgeseg::ResizeMode::Bilinear;
  const int sizes[][4] = {{360, 480, 360, 480}, {360, 480, 128, 160}, {120, 160, 257, 333}};
  for (const auto& s : sizes) {
    for (int fmt = 0; fmt < 3; ++fmt) {
      for (int bgr = 0; bgr < 2; ++bgr) {
        p.network_bgr = bgr;
        const int h = s[0], w = s[1], nh = s[2], nw = s[3];
        std::vector<uint8_t> frame(fmt == 2 ? w * h * 3 / 2 : w * h * 3);
        for (auto& v : frame) v = static_cast<uint8_t>(rng());
        edgeseg::Frame host{frame.data(), w, h, static_cast<edgeseg::PixelFormat>(fmt), 3, 0, nullptr};
        std::vector<float> cpu(3 * nh * nw);
        std::vector<uint8_t> scratch;
        edgeseg::preprocess(host, p, nh, nw, cpu.data(), scratch);
        uint8_t* dframe = to_device(frame);
        float* dout = nullptr;
        cudaMalloc(&dout, cpu.size() * sizeof(float));
        edgeseg::Frame dev = host;
        dev.data = dframe;
        cudaSetDevice(0);
        edgeseg::cuda::preprocess(dev, p, nh, nw, dout, nullptr, device);
        cudaSetDevice(device);
        auto gpu = to_host(dout, cpu.size());
        size_t diff = 0;
        for (size_t i = 0; i < cpu.size(); ++i) diff += std::memcmp(&cpu[i], &gpu[i], sizeof(float)) != 0;
        if (diff) {
          ++failures;
          std::fprintf(stderr, "GPU %d preprocess %dx%d->%dx%d format %d bgr %d: %zu of %zu values differ\n", device,
                       h, w, nh, nw, fmt, bgr, diff, cpu.size());
        }
        cudaFree(dframe);
        cudaFree(dout);
      }
    }
    const int classes = 12, lh = s[2] / 4 + 1, lw = s[3] / 4 + 1;
    std::normal_distribution<float> normal;
    std::vector<float> logits(classes * lh * lw);
    for (auto& v : logits) v = normal(rng);
    std::vector<uint8_t> cpu(s[0] * s[1]);
    edgeseg::labels_from_logits(logits.data(), classes, lh, lw, s[0], s[1], cpu.data());
    float* dl = to_device(logits);
    uint8_t* dlab = nullptr;
    cudaMalloc(&dlab, cpu.size());
    cudaSetDevice(0);
    edgeseg::cuda::labels_from_logits(dl, classes, lh, lw, s[0], s[1], dlab, nullptr, device);
    cudaSetDevice(device);
    auto gpu = to_host(dlab, cpu.size());
    if (gpu != cpu) {
      ++failures;
      std::fprintf(stderr, "GPU %d labels %dx%d -> %dx%d differ\n", device, lh, lw, s[0], s[1]);
    }
    cudaFree(dl);
    cudaFree(dlab);
  }
  cudaError_t e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    ++failures;
    std::fprintf(stderr, "GPU %d: CUDA error %s\n", device, cudaGetErrorString(e));
  }
  cudaSetDevice(0);
}

// A device index that does not exist throws edgeseg::Error; a good call leaves the caller's device current.
static void check_device_handling(int count) {
  edgeseg::Preprocessing p;
  std::vector<uint8_t> frame(8 * 8 * 3);
  edgeseg::Frame f{frame.data(), 8, 8, edgeseg::PixelFormat::RGB, 3, 0, nullptr};
  try {
    edgeseg::cuda::preprocess(f, p, 8, 8, nullptr, nullptr, count);
    ++failures;
    std::fprintf(stderr, "device %d (of %d) did not throw\n", count, count);
  } catch (const edgeseg::Error& err) {
    if (std::string(err.what()).find("cudaSetDevice") == std::string::npos) {
      ++failures;
      std::fprintf(stderr, "unexpected error for a bad device: %s\n", err.what());
    }
  }
  const int last = count - 1;
  float* logits = nullptr;
  uint8_t* labels = nullptr;
  cudaSetDevice(last);
  cudaMalloc(&logits, 2 * 4 * 4 * sizeof(float));
  cudaMemset(logits, 0, 2 * 4 * 4 * sizeof(float));
  cudaMalloc(&labels, 4 * 4);
  cudaSetDevice(0);
  edgeseg::cuda::labels_from_logits(logits, 2, 4, 4, 4, 4, labels, nullptr, last);
  int current = -1;
  cudaGetDevice(&current);
  if (current != 0) {
    ++failures;
    std::fprintf(stderr, "current device %d after a call on GPU %d, expected the caller's 0\n", current, last);
  }
  cudaSetDevice(last);
  cudaDeviceSynchronize();
  cudaFree(logits);
  cudaFree(labels);
  cudaSetDevice(0);
}

int main() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
    std::printf("no CUDA GPU: skipped\n");
    return 77;
  }
  for (int device = 0; device < count; ++device) compare_on(device);
  check_device_handling(count);
  std::printf("cuda vs cpu on %d GPU(s): %d failures\n", count, failures);
  return failures ? 1 : 0;
}
