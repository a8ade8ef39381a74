#include <sstream>

#include "backend.hpp"

namespace edgeseg {

const std::vector<BackendEntry>& backend_registry() {
  static const std::vector<BackendEntry> entries = {
#ifdef EDGESEG_WITH_TENSORRT
      kTensorRtBackend,
#endif
#ifdef EDGESEG_WITH_OPENVINO
      kOpenVinoBackend,
#endif
  };
  return entries;
}

std::vector<std::string> available_backends() {
  std::vector<std::string> names;
  for (const auto& e : backend_registry()) names.emplace_back(e.name);
  return names;
}

std::unique_ptr<Backend> make_backend(const Bundle& bundle, const Options& options) {
  const auto& entries = backend_registry();
  std::ostringstream built;
  for (std::size_t i = 0; i < entries.size(); ++i) built << (i ? ", " : "") << entries[i].name;
  if (entries.empty())
    throw Error("this edgeseg_runtime was built without any backend; reconfigure with OpenVINO "
                "(pip install openvino) or TensorRT present and rebuild");
  std::ostringstream why;
  for (const auto& e : entries) {
    if (options.backend != "auto" && options.backend != e.name) continue;
    std::string problem = e.unusable(bundle, options);
    if (problem.empty()) return e.make(bundle, options);
    if (options.backend == e.name) throw Error(problem);
    why << "; " << e.name << ": " << problem;
  }
  if (options.backend != "auto")
    throw Error("backend must be auto or one this build has (" + built.str() + "), got '" + options.backend +
                "'; pick one of those or rebuild edgeseg_runtime with that backend's dependency present");
  throw Error("no backend of this build (" + built.str() + ") can run " + bundle.root() + why.str());
}

}  // namespace edgeseg
