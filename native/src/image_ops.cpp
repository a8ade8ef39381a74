// CPU pre- and post-processing. Float expressions are written in the order the Python reference
// evaluates them: numpy for normalize/blend (no FMA), torch's generic bilinear CPU kernel for the
// resizes, whose builds with FMA (AVX2/AVX-512 on x86, aarch64) contract `a * b + c` into fused
// multiply-adds: those are explicit std::fma calls here (see bilinear()). The file is compiled with
// -ffp-contract=off so the compiler adds no others.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "edgeseg/runtime.hpp"

namespace edgeseg {

namespace {

// torch area_pixel_compute_source_index + guard_index_and_lambda (align_corners=False, linear).
struct Tap {
  int i0, i1;
  float w0, w1;
};

std::vector<Tap> linear_taps(int in, int out) {
  std::vector<Tap> taps(out);
  const float scale = static_cast<float>(in) / static_cast<float>(out);
  for (int d = 0; d < out; ++d) {
    float real = std::fma(scale, static_cast<float>(d) + 0.5f, -0.5f);
    if (real < 0) real = 0;
    int i0 = std::min(static_cast<int>(real), in - 1);
    float w1 = std::min(std::max(real - static_cast<float>(i0), 0.0f), 1.0f);
    taps[d] = {i0, i0 + (i0 < in - 1 ? 1 : 0), 1.0f - w1, w1};
  }
  return taps;
}

// torch's t0 * w0 + t1 * w1 per axis (width inside, height outside) as its compiled CPU kernel rounds
// it: fma(t0, w0, t1 * w1) on both axes (measured against torch 2.x on x86-64 AVX2; bit-identical for
// most sizes, within 2.4e-7 where torch's vectorised loops round differently, e.g. small outputs).
inline float bilinear(float p00, float p01, float p10, float p11, const Tap& tx, const Tap& ty) {
  const float top = std::fma(p00, tx.w0, p01 * tx.w1);
  const float bottom = std::fma(p10, tx.w0, p11 * tx.w1);
  return std::fma(top, ty.w0, bottom * ty.w1);
}

inline uint8_t round_u8(float v) {
  float r = std::floor(v + 0.5f);  // half up, as edgeseg.data.resize.bilinear (and OpenCV's fixed point) rounds
  return static_cast<uint8_t>(r < 0 ? 0 : (r > 255 ? 255 : r));
}

void check_dims(int h, int w, const char* what) {
  if (h <= 0 || w <= 0)
    throw Error(std::string(what) + " must have a positive size, got " + std::to_string(h) + "x" + std::to_string(w));
}

}  // namespace

void resize_bilinear_u8(const uint8_t* src, int src_h, int src_w, std::size_t src_stride, int channels, uint8_t* dst,
                        int dst_h, int dst_w, std::size_t dst_stride) {
  check_dims(src_h, src_w, "resize source");
  check_dims(dst_h, dst_w, "resize target");
  const auto ty = linear_taps(src_h, dst_h), tx = linear_taps(src_w, dst_w);
  for (int y = 0; y < dst_h; ++y) {
    const uint8_t* r0 = src + ty[y].i0 * src_stride;
    const uint8_t* r1 = src + ty[y].i1 * src_stride;
    uint8_t* out = dst + y * dst_stride;
    for (int x = 0; x < dst_w; ++x) {
      const Tap& t = tx[x];
      const int a = t.i0 * channels, b = t.i1 * channels;
      for (int c = 0; c < channels; ++c) {
        out[x * channels + c] = round_u8(bilinear(r0[a + c], r0[b + c], r1[a + c], r1[b + c], t, ty[y]));
      }
    }
  }
}

void resize_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, float* out) {
  check_dims(h, w, "logits");
  check_dims(out_h, out_w, "class map");
  const auto ty = linear_taps(h, out_h), tx = linear_taps(w, out_w);
  for (int c = 0; c < classes; ++c) {
    const float* plane = logits + static_cast<std::size_t>(c) * h * w;
    float* o = out + static_cast<std::size_t>(c) * out_h * out_w;
    for (int y = 0; y < out_h; ++y) {
      const float* r0 = plane + ty[y].i0 * w;
      const float* r1 = plane + ty[y].i1 * w;
      for (int x = 0; x < out_w; ++x) {
        const Tap& t = tx[x];
        o[y * out_w + x] = bilinear(r0[t.i0], r0[t.i1], r1[t.i0], r1[t.i1], t, ty[y]);
      }
    }
  }
}

void labels_from_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, uint8_t* labels) {
  if (classes < 1 || classes > 256)
    throw Error("expected 1 to 256 classes for an 8-bit class map, got " + std::to_string(classes));
  const std::size_t n = static_cast<std::size_t>(out_h) * out_w;
  std::vector<float> best(n), resized;
  const float* scores = logits;
  if (h != out_h || w != out_w) {
    resized.resize(n * classes);
    resize_logits(logits, classes, h, w, out_h, out_w, resized.data());
    scores = resized.data();
  }
  std::memcpy(best.data(), scores, n * sizeof(float));
  std::fill(labels, labels + n, 0);
  for (int c = 1; c < classes; ++c) {
    const float* s = scores + static_cast<std::size_t>(c) * n;
    for (std::size_t i = 0; i < n; ++i)
      if (s[i] > best[i] || (std::isnan(s[i]) && !std::isnan(best[i]))) {  // numpy: first NaN wins, then first max
        best[i] = s[i];
        labels[i] = static_cast<uint8_t>(c);
      }
  }
}

void frame_to_rgb(const Frame& f, uint8_t* rgb) {
  const int w = f.width, h = f.height;
  if (f.format == PixelFormat::NV12) {
    static constexpr int CY = 1220542, CUB = 2116026, CUG = -409993, CVG = -852492, CVR = 1673527, SHIFT = 20;
    const std::size_t stride = f.stride ? f.stride : static_cast<std::size_t>(w);
    const uint8_t* uv_plane = f.uv ? f.uv : f.data + stride * h;
    auto sat = [](int v) { return static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v)); };
    for (int y = 0; y < h; ++y) {
      const uint8_t* yrow = f.data + y * stride;
      const uint8_t* uvrow = uv_plane + (y / 2) * stride;
      uint8_t* out = rgb + static_cast<std::size_t>(y) * w * 3;
      for (int x = 0; x < w; ++x) {
        int u = int(uvrow[(x & ~1)]) - 128, v = int(uvrow[(x & ~1) + 1]) - 128;
        int ruv = (1 << (SHIFT - 1)) + CVR * v;
        int guv = (1 << (SHIFT - 1)) + CVG * v + CUG * u;
        int buv = (1 << (SHIFT - 1)) + CUB * u;
        int yy = std::max(0, int(yrow[x]) - 16) * CY;
        out[3 * x] = sat((yy + ruv) >> SHIFT);
        out[3 * x + 1] = sat((yy + guv) >> SHIFT);
        out[3 * x + 2] = sat((yy + buv) >> SHIFT);
      }
    }
    return;
  }
  const std::size_t stride = f.stride ? f.stride : static_cast<std::size_t>(w) * 3;
  const bool swap = f.format == PixelFormat::BGR;
  for (int y = 0; y < h; ++y) {
    const uint8_t* in = f.data + y * stride;
    uint8_t* out = rgb + static_cast<std::size_t>(y) * w * 3;
    if (!swap) {
      std::memcpy(out, in, static_cast<std::size_t>(w) * 3);
      continue;
    }
    for (int x = 0; x < w; ++x) {
      out[3 * x] = in[3 * x + 2];
      out[3 * x + 1] = in[3 * x + 1];
      out[3 * x + 2] = in[3 * x];
    }
  }
}

void normalize_rgb(const uint8_t* rgb, int h, int w, const Preprocessing& p, float* chw) {
  const std::size_t n = static_cast<std::size_t>(h) * w;
  for (int c = 0; c < 3; ++c) {
    const int src = p.network_bgr ? 2 - c : c;
    const float mean = p.mean[c], stdv = p.std[c], scale = p.scale;
    float* out = chw + c * n;
    for (std::size_t i = 0; i < n; ++i) {
      float v = static_cast<float>(rgb[3 * i + src]) * scale;  // numpy: x * scale; x -= mean; x /= std
      v -= mean;
      out[i] = v / stdv;
    }
  }
}

void preprocess(const Frame& frame, const Preprocessing& p, int net_h, int net_w, float* chw,
                std::vector<uint8_t>& scratch) {
  const std::size_t frame_px = static_cast<std::size_t>(frame.height) * frame.width;
  const bool resize = net_h != frame.height || net_w != frame.width;
  if (resize && p.resize != ResizeMode::Bilinear)
    throw Error("this bundle's preprocessing uses the legacy PIL bilinear resize (antialiased), which the native "
                "runtime does not implement, and the frame (" + std::to_string(frame.height) + "x" +
                std::to_string(frame.width) + ") differs from the network input (" + std::to_string(net_h) + "x" +
                std::to_string(net_w) + "); rebuild the bundle with a current edgeseg (edgeseg build) or pass " +
                "frames of the network size");
  const bool direct = frame.format == PixelFormat::RGB && (frame.stride == 0 || frame.stride == 3u * frame.width);
  const std::size_t need = (direct ? 0 : frame_px * 3) + (resize ? static_cast<std::size_t>(net_h) * net_w * 3 : 0);
  if (scratch.size() < need) scratch.resize(need);
  const uint8_t* rgb = frame.data;
  if (!direct) {
    frame_to_rgb(frame, scratch.data());
    rgb = scratch.data();
  }
  if (resize) {
    uint8_t* small = scratch.data() + (direct ? 0 : frame_px * 3);
    resize_bilinear_u8(rgb, frame.height, frame.width, static_cast<std::size_t>(frame.width) * 3, 3, small, net_h,
                       net_w, static_cast<std::size_t>(net_w) * 3);
    rgb = small;
  }
  normalize_rgb(rgb, net_h, net_w, p, chw);
}

void overlay_rgb(const uint8_t* rgb, const uint8_t* labels, int h, int w,
                 const std::vector<std::array<uint8_t, 3>>& palette, float alpha, uint8_t* out) {
  if (!(alpha >= 0.0f && alpha <= 1.0f)) throw Error("alpha must be between 0 and 1, got " + std::to_string(alpha));
  const float keep = 1.0f - alpha;
  const std::size_t n = static_cast<std::size_t>(h) * w;
  for (std::size_t i = 0; i < n; ++i) {
    const uint8_t lab = labels[i];
    for (int c = 0; c < 3; ++c) {
      const float colour = lab < palette.size() ? palette[lab][c] : 0.0f;  // unknown classes black
      float v = static_cast<float>(rgb[3 * i + c]) * keep;
      v += colour * alpha;
      v += 0.5f;
      out[3 * i + c] = static_cast<uint8_t>(v < 0 ? 0 : (v > 255 ? 255 : v));
    }
  }
}

}  // namespace edgeseg
