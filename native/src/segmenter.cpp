// Segmenter: bundle + backend + CPU pre/post-processing, the native edgeseg.load.
#include <chrono>

#include "backend.hpp"

namespace edgeseg {

namespace {
double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}
const char* format_name(PixelFormat f) {
  return f == PixelFormat::RGB ? "RGB" : f == PixelFormat::BGR ? "BGR" : "NV12";
}
}  // namespace

Segmenter::Segmenter(const std::string& bundle_dir, const Options& options) : bundle_(Bundle::open(bundle_dir)) {
  if (options.verify_all_files) bundle_.verify_all();
  backend_ = make_backend(bundle_, options);
}

Segmenter::~Segmenter() = default;
Segmenter::Segmenter(Segmenter&&) noexcept = default;
Segmenter& Segmenter::operator=(Segmenter&&) noexcept = default;

std::string Segmenter::backend() const { return backend_->name(); }

void Segmenter::check_frame(const Frame& f) const {
  std::string got = std::string(format_name(f.format)) + " frame " + std::to_string(f.width) + "x" +
                    std::to_string(f.height);
  if (!f.data || f.width <= 0 || f.height <= 0)
    throw Error("expected a frame with pixels and a positive width and height, got " + got +
                (f.data ? "" : " without data") + "; pass the decoded frame");
  if (f.format == PixelFormat::NV12) {
    if (f.width % 2 || f.height % 2)
      throw Error("expected an NV12 frame with even width and height, got " + got + "; crop it by one pixel");
    if (f.stride && f.stride < static_cast<std::size_t>(f.width))
      throw Error("NV12 row stride " + std::to_string(f.stride) + " is smaller than the width " +
                  std::to_string(f.width) + "; pass the Y plane's stride in bytes");
    return;
  }
  if (f.channels != 3)
    throw Error("expected a 3-channel " + std::string(format_name(f.format)) + " frame (HxWx3 uint8), got " +
                std::to_string(f.channels) + " channels; convert it first (grey, BGRA: cvtColor to BGR)");
  if (f.stride && f.stride < 3u * f.width)
    throw Error("row stride " + std::to_string(f.stride) + " is smaller than width*3 = " +
                std::to_string(3 * f.width) + "; pass the stride in bytes");
}

std::array<int, 2> Segmenter::network_size(const Frame& f) const {
  const Preprocessing& p = bundle_.preprocessing();
  if (p.height) return {p.height, p.width};
  const ShapeBounds& b = bundle_.input_bounds();  // dynamic H/W: the frame itself, within the bounds
  if (f.height < b.min[2] || f.height > b.max[2] || f.width < b.min[3] || f.width > b.max[3])
    throw Error("frame " + std::to_string(f.width) + "x" + std::to_string(f.height) + " (WxH) is outside the " +
                "bundle's input bounds: height " + std::to_string(b.min[2]) + ".." + std::to_string(b.max[2]) +
                ", width " + std::to_string(b.min[3]) + ".." + std::to_string(b.max[3]) +
                "; resize the frame or rebuild the bundle with wider --dynamic bounds");
  return {f.height, f.width};
}

void Segmenter::segment(const Frame& frame, uint8_t* labels) {
  check_frame(frame);
  const auto net = network_size(frame);
  auto t0 = std::chrono::steady_clock::now();
  input_.resize(3u * net[0] * net[1]);
  preprocess(frame, bundle_.preprocessing(), net[0], net[1], input_.data(), scratch_);
  timing_.preprocess_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  backend_->infer(input_.data(), {1, 3, net[0], net[1]}, logits_, logits_shape_);
  timing_.infer_ms = ms_since(t0);
  t0 = std::chrono::steady_clock::now();
  if (logits_shape_[0] != 1 || logits_shape_[1] < 1 || logits_shape_[1] > 256)
    throw Error("the model returned logits of shape (" + std::to_string(logits_shape_[0]) + ", " +
                std::to_string(logits_shape_[1]) + ", ...), expected (1, C <= 256, h, w); rebuild the bundle");
  labels_from_logits(logits_.data(), static_cast<int>(logits_shape_[1]), static_cast<int>(logits_shape_[2]),
                     static_cast<int>(logits_shape_[3]), frame.height, frame.width, labels);
  timing_.postprocess_ms = ms_since(t0);
}

std::vector<uint8_t> Segmenter::segment(const Frame& frame) {
  check_frame(frame);  // before sizing the buffer from the frame's dimensions
  std::vector<uint8_t> labels(static_cast<std::size_t>(frame.width) * frame.height);
  segment(frame, labels.data());
  return labels;
}

}  // namespace edgeseg
