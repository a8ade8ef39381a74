// Private: the interface every inference backend implements, and the one registry that names them.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "edgeseg/runtime.hpp"

namespace edgeseg {

class Backend {
 public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;
  // input: host float32 NCHW of `shape`; out: host float32 logits, `out_shape` NCHW.
  virtual void infer(const float* input, const std::array<int64_t, 4>& shape, std::vector<float>& out,
                     std::array<int64_t, 4>& out_shape) = 0;
};

struct BackendEntry {
  const char* name;
  // Empty when `bundle` can run here with this backend, else why not (used by "auto" and messages).
  std::string (*unusable)(const Bundle& bundle, const Options& options);
  std::unique_ptr<Backend> (*make)(const Bundle& bundle, const Options& options);
};

// In preference order for "auto".
const std::vector<BackendEntry>& backend_registry();
std::unique_ptr<Backend> make_backend(const Bundle& bundle, const Options& options);

#ifdef EDGESEG_WITH_OPENVINO
extern const BackendEntry kOpenVinoBackend;
#endif
#ifdef EDGESEG_WITH_TENSORRT
extern const BackendEntry kTensorRtBackend;
#endif

}  // namespace edgeseg
