// edgeseg native runtime: run an edgeseg bundle from C++ with the answer `edgeseg.load` gives.
//
//   edgeseg::Segmenter seg("bundle/");                        // manifest read, every file checked (sha256)
//   edgeseg::Frame f{pixels, width, height, edgeseg::PixelFormat::BGR};
//   std::vector<uint8_t> labels = seg.segment(f);             // height*width class indices, frame size
//
// Contract (the same as the Python package): frame -> resize to the network input (the manifest's
// "resize" definition) -> channel order -> (pixel * scale - mean) / std -> NCHW float32 -> backend
// -> logits (1, C, h, w) -> bilinear (half-pixel, float) to the frame size -> argmax (first max wins).
// Every refusal is an edgeseg::Error whose text says what was expected, what was found and what to do.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace edgeseg {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// ----------------------------------------------------------------------------- frames

enum class PixelFormat { RGB, BGR, NV12 };

// A camera frame. RGB/BGR: height rows of `stride` bytes (0 = width*channels), `channels` must be 3.
// NV12: a Y plane (height rows of `stride` bytes, 0 = width), then the interleaved UV plane
// (height/2 rows of the same stride) starting at `uv` (nullptr = right after the Y plane);
// width and height even, `channels` ignored. Converted with BT.601 limited range (OpenCV's
// COLOR_YUV2RGB_NV12).
struct Frame {
  const uint8_t* data = nullptr;
  int width = 0;
  int height = 0;
  PixelFormat format = PixelFormat::RGB;
  int channels = 3;
  std::size_t stride = 0;
  const uint8_t* uv = nullptr;
};

// ----------------------------------------------------------------------------- bundles

enum class ResizeMode {
  Bilinear,     // "bilinear": half-pixel centres, no antialiasing, float32 then rounded to nearest-even
  PilBilinear,  // "pil_bilinear" or no field: legacy PIL BILINEAR (antialiasing); native refuses to resize
};

struct Preprocessing {
  std::array<float, 3> mean{};  // in channel_order
  std::array<float, 3> std{};
  float scale = 1.0f / 255.0f;
  bool network_bgr = false;  // channel_order "BGR"
  int height = 0;            // network input; 0 = the frame's size (bundle built with a dynamic H/W)
  int width = 0;
  ResizeMode resize = ResizeMode::PilBilinear;
};

struct ShapeBounds {
  std::array<int64_t, 4> min{};  // NCHW
  std::array<int64_t, 4> max{};
};

// What the manifest records about a TensorRT engine (the "engine" dict).
struct EngineRecord {
  std::string trt_version;
  std::string compute_capability;  // "8.7"
  std::string gpu;
  bool version_compatible = false;
  std::string hardware_compatible = "none";  // none | ampere_plus | same_compute_capability
  std::optional<int> dla_core;
  std::string platform_os, platform_arch;  // engine.platform of the manifest ("linux", "aarch64"); empty: not recorded
  std::optional<bool> platform_jetson;
};

// What this machine offers a TensorRT engine.
struct RuntimeRecord {
  std::string trt_version;
  std::string compute_capability;
  std::string gpu;
};

// Reasons an engine built as `built` cannot run on `runtime`; empty = compatible (the rules of
// edgeseg.backends.trt_api.engine_compatibility).
std::vector<std::string> engine_problems(const EngineRecord& built, const RuntimeRecord& runtime);

class Bundle {
 public:
  // Reads and checks manifest.json: format, version, containment of every named file, roles listed
  // in `files` with a sha256. Files themselves are hashed when read (read_verified).
  static Bundle open(const std::string& dir);

  const std::string& root() const { return root_; }
  const std::string& precision() const { return precision_; }
  const std::vector<std::string>& classes() const { return classes_; }
  const std::vector<std::array<uint8_t, 3>>& palette() const { return palette_; }
  const Preprocessing& preprocessing() const { return preprocessing_; }
  const ShapeBounds& input_bounds() const { return bounds_; }
  const std::string& input_name() const { return input_name_; }
  const std::optional<EngineRecord>& engine() const { return engine_; }

  bool has_role(const std::string& role) const;
  std::string role_path(const std::string& role) const;  // absolute path; throws if the role is absent
  // The file playing `role`, read once and checked against its sha256 (the bytes returned are the
  // bytes hashed). Throws naming the file and the rebuild command when it is missing or changed.
  std::vector<uint8_t> read_verified(const std::string& role) const;
  // Hash every file the manifest lists (what `edgeseg info` / edgeseg.load(verify=True) do).
  void verify_all() const;

 private:
  std::string root_, precision_, input_name_;
  std::vector<std::string> classes_;
  std::vector<std::array<uint8_t, 3>> palette_;
  Preprocessing preprocessing_;
  ShapeBounds bounds_;
  std::optional<EngineRecord> engine_;
  std::vector<std::pair<std::string, std::string>> roles_;  // role -> file name
  std::vector<std::pair<std::string, std::string>> files_;  // file name -> sha256
  const std::string* sha_of(const std::string& name) const;
};

std::string sha256_hex(const uint8_t* data, std::size_t size);

// ----------------------------------------------------------------------------- CPU pre/post-processing

// Bilinear resize, half-pixel centres, edge clamp, no antialiasing (torch interpolate
// align_corners=False) of an interleaved uint8 image, computed in float32 and rounded to the
// nearest integer, ties half up (floor(v + 0.5), as edgeseg.data.resize.bilinear). src/dst rows are `*_stride` bytes.
void resize_bilinear_u8(const uint8_t* src, int src_h, int src_w, std::size_t src_stride, int channels,
                        uint8_t* dst, int dst_h, int dst_w, std::size_t dst_stride);

// The frame as packed RGB (NV12 converted, BGR swapped), height*width*3 bytes.
void frame_to_rgb(const Frame& frame, uint8_t* rgb);

// Packed RGB (h, w, 3) -> (3, h, w) float32 network input: channel order, * scale, - mean, / std.
void normalize_rgb(const uint8_t* rgb, int h, int w, const Preprocessing& p, float* chw);

// The whole CPU preprocessing of a frame: to RGB, resize to (net_h, net_w), normalize.
// `scratch` is reused between calls.
void preprocess(const Frame& frame, const Preprocessing& p, int net_h, int net_w, float* chw,
                std::vector<uint8_t>& scratch);

// (C, h, w) float32 logits -> (H, W) class indices: bilinear (half-pixel, float, no rounding)
// to H x W, then argmax over C, the first maximum winning (numpy argmax). C <= 256.
void labels_from_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, uint8_t* labels);

// The bilinear float resize alone, (C, h, w) -> (C, H, W), as labels_from_logits computes it.
void resize_logits(const float* logits, int classes, int h, int w, int out_h, int out_w, float* out);

// (1 - alpha) * rgb + alpha * palette[label], rounded (edgeseg.overlay.blend), packed RGB.
void overlay_rgb(const uint8_t* rgb, const uint8_t* labels, int h, int w,
                 const std::vector<std::array<uint8_t, 3>>& palette, float alpha, uint8_t* out);

// ----------------------------------------------------------------------------- running a bundle

struct Options {
  std::string backend = "auto";  // auto | openvino | tensorrt (see available_backends())
  int threads = 0;               // CPU inference threads, 0 = the backend's default
  int device = 0;                // CUDA device for TensorRT
  bool verify_all_files = true;  // hash every listed file at open, as edgeseg.load does
};

// Names of the backends this build of the library contains.
std::vector<std::string> available_backends();

struct Timing {  // milliseconds of the last segment() call
  double preprocess_ms = 0, infer_ms = 0, postprocess_ms = 0;
};

class Backend;  // defined in the library's private headers

// One Segmenter per thread (it reuses its buffers and the backend's request); several may share a bundle.
class Segmenter {
 public:
  explicit Segmenter(const std::string& bundle_dir, const Options& options = {});
  ~Segmenter();
  Segmenter(Segmenter&&) noexcept;
  Segmenter& operator=(Segmenter&&) noexcept;

  const Bundle& bundle() const { return bundle_; }
  std::string backend() const;

  // Class map at the frame's size into `labels` (frame.height * frame.width bytes).
  void segment(const Frame& frame, uint8_t* labels);
  std::vector<uint8_t> segment(const Frame& frame);
  // Logits at network resolution of the last call: shape (1, C, h, w).
  const std::vector<float>& last_logits() const { return logits_; }
  const std::array<int64_t, 4>& last_logits_shape() const { return logits_shape_; }
  const Timing& last_timing() const { return timing_; }

 private:
  Bundle bundle_;
  std::unique_ptr<Backend> backend_;
  std::vector<float> input_, logits_;
  std::array<int64_t, 4> logits_shape_{};
  std::vector<uint8_t> scratch_;
  Timing timing_;
  void check_frame(const Frame& frame) const;
  std::array<int, 2> network_size(const Frame& frame) const;
};

}  // namespace edgeseg
