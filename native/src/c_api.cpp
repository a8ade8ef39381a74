// The C API: exceptions become a non-zero return and a thread-local error string.
#include <exception>
#include <string>

#include "edgeseg/edgeseg.h"
#include "edgeseg/runtime.hpp"

struct edgeseg_segmenter {
  edgeseg::Segmenter seg;
  std::string backend;
};

namespace {
thread_local std::string last_error;

template <typename F>
int guarded(F&& f) {
  try {
    f();
    last_error.clear();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown error";
  }
  return 1;
}

void require(bool ok, const char* what) {
  if (!ok) throw edgeseg::Error(std::string("invalid argument: ") + what);
}

edgeseg::PixelFormat pixel_format(int format) {
  if (format < EDGESEG_RGB || format > EDGESEG_NV12)
    throw edgeseg::Error("pixel format must be EDGESEG_RGB (0), EDGESEG_BGR (1) or EDGESEG_NV12 (2), got " +
                         std::to_string(format));
  return static_cast<edgeseg::PixelFormat>(format);
}
}  // namespace

extern "C" {

const char* edgeseg_last_error(void) { return last_error.c_str(); }

int edgeseg_open(const char* bundle_dir, const char* backend, int threads, edgeseg_segmenter** out) {
  return guarded([&] {
    require(bundle_dir && out, "bundle_dir and out must not be NULL");
    *out = nullptr;
    edgeseg::Options options;
    options.backend = backend ? backend : "auto";
    options.threads = threads;
    edgeseg::Segmenter seg(bundle_dir, options);
    std::string name = seg.backend();
    *out = new edgeseg_segmenter{std::move(seg), std::move(name)};
  });
}

void edgeseg_close(edgeseg_segmenter* seg) { delete seg; }

const char* edgeseg_backend(const edgeseg_segmenter* seg) { return seg ? seg->backend.c_str() : ""; }

int edgeseg_num_classes(const edgeseg_segmenter* seg) {
  return seg ? static_cast<int>(seg->seg.bundle().classes().size()) : 0;
}

int edgeseg_class_info(const edgeseg_segmenter* seg, int i, const char** name, uint8_t* rgb) {
  return guarded([&] {
    require(seg && i >= 0 && i < edgeseg_num_classes(seg), "class index out of range");
    if (name) *name = seg->seg.bundle().classes()[i].c_str();
    const auto& pal = seg->seg.bundle().palette();
    for (int c = 0; c < 3 && rgb; ++c) rgb[c] = i < static_cast<int>(pal.size()) ? pal[i][c] : 0;
  });
}

int edgeseg_segment(edgeseg_segmenter* seg, const uint8_t* data, int width, int height, size_t stride, int format,
                    int channels, uint8_t* labels) {
  return guarded([&] {
    require(seg && labels, "seg and labels must not be NULL");
    edgeseg::Frame f{data, width, height, pixel_format(format), channels, stride, nullptr};
    seg->seg.segment(f, labels);
  });
}

int edgeseg_last_timing(const edgeseg_segmenter* seg, double* pre, double* infer, double* post) {
  return guarded([&] {
    require(seg, "seg must not be NULL");
    const auto& t = seg->seg.last_timing();
    if (pre) *pre = t.preprocess_ms;
    if (infer) *infer = t.infer_ms;
    if (post) *post = t.postprocess_ms;
  });
}

int edgeseg_resize_bilinear_u8(const uint8_t* src, int src_h, int src_w, int channels, uint8_t* dst, int dst_h,
                               int dst_w) {
  return guarded([&] {
    require(src && dst && channels > 0, "src, dst and channels");
    edgeseg::resize_bilinear_u8(src, src_h, src_w, static_cast<size_t>(src_w) * channels, channels, dst, dst_h,
                                dst_w, static_cast<size_t>(dst_w) * channels);
  });
}

int edgeseg_frame_to_rgb(const uint8_t* data, int width, int height, size_t stride, int format, uint8_t* rgb) {
  return guarded([&] {
    require(data && rgb && width > 0 && height > 0, "data, rgb and a positive size");
    edgeseg::frame_to_rgb(edgeseg::Frame{data, width, height, pixel_format(format), 3, stride, nullptr}, rgb);
  });
}

int edgeseg_normalize(const uint8_t* rgb, int h, int w, const float* mean, const float* std, float scale,
                      int network_bgr, float* chw) {
  return guarded([&] {
    require(rgb && mean && std && chw, "rgb, mean, std and chw");
    edgeseg::Preprocessing p;
    for (int c = 0; c < 3; ++c) {
      p.mean[c] = mean[c];
      p.std[c] = std[c];
    }
    p.scale = scale;
    p.network_bgr = network_bgr != 0;
    edgeseg::normalize_rgb(rgb, h, w, p, chw);
  });
}

int edgeseg_resize_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, float* out) {
  return guarded([&] {
    require(logits && out, "logits and out");
    edgeseg::resize_logits(logits, classes, h, w, out_h, out_w, out);
  });
}

int edgeseg_labels_from_logits(const float* logits, int classes, int h, int w, int out_h, int out_w,
                               uint8_t* labels) {
  return guarded([&] {
    require(logits && labels, "logits and labels");
    edgeseg::labels_from_logits(logits, classes, h, w, out_h, out_w, labels);
  });
}

}  // extern "C"
