// OpenVINO (CPU) backend: the bundle's FP32 ONNX, or its INT8 Q/DQ ONNX for int8 bundles (the
// variants edgeseg.load picks on CPU), read from the sha256-checked bytes.
#include <openvino/openvino.hpp>

#include "../backend.hpp"

namespace edgeseg {

namespace {

std::string model_role(const Bundle& b) { return b.precision() == "int8" ? "int8" : "fp32"; }

class OpenVinoBackend final : public Backend {
 public:
  OpenVinoBackend(const Bundle& bundle, const Options& options) {
    const std::vector<uint8_t> bytes = bundle.read_verified(model_role(bundle));
    try {
      std::string text(bytes.begin(), bytes.end());
      std::shared_ptr<ov::Model> model = core_.read_model(text, ov::Tensor());
      ov::AnyMap config{ov::hint::performance_mode(ov::hint::PerformanceMode::LATENCY),
                        ov::hint::inference_precision(ov::element::f32)};  // no bf16 on AMX/AVX512-BF16 CPUs
      if (options.threads > 0) config.emplace(ov::inference_num_threads(options.threads));
      compiled_ = core_.compile_model(model, "CPU", config);
      request_ = compiled_.create_infer_request();
    } catch (const ov::Exception& e) {
      std::string what = e.what();
      throw Error("OpenVINO cannot load " + bundle.role_path(model_role(bundle)) + " (" +
                  what.substr(0, what.find('\n')) + "); rebuild the bundle or upgrade OpenVINO");
    }
    if (compiled_.inputs().size() != 1 || compiled_.outputs().size() != 1)
      throw Error("the bundle's ONNX has " + std::to_string(compiled_.inputs().size()) + " inputs and " +
                  std::to_string(compiled_.outputs().size()) + " outputs, expected one each; rebuild from an "
                  "edgeseg export");
  }

  std::string name() const override { return "openvino"; }

  void infer(const float* input, const std::array<int64_t, 4>& shape, std::vector<float>& out,
             std::array<int64_t, 4>& out_shape) override {
    try {
      ov::Shape s{static_cast<size_t>(shape[0]), static_cast<size_t>(shape[1]), static_cast<size_t>(shape[2]),
                  static_cast<size_t>(shape[3])};
      request_.set_input_tensor(ov::Tensor(ov::element::f32, s, const_cast<float*>(input)));  // no copy
      request_.infer();
      const ov::Tensor logits = request_.get_output_tensor();
      const ov::Shape os = logits.get_shape();
      if (os.size() != 4 || logits.get_element_type() != ov::element::f32)
        throw Error("the model's output is " + logits.get_element_type().get_type_name() + " of rank " +
                    std::to_string(os.size()) + ", expected float32 (N, C, h, w) logits; rebuild the bundle");
      for (int i = 0; i < 4; ++i) out_shape[i] = static_cast<int64_t>(os[i]);
      out.assign(logits.data<const float>(), logits.data<const float>() + logits.get_size());
    } catch (const ov::Exception& e) {
      std::string what = e.what();
      throw Error("OpenVINO inference failed (" + what.substr(0, what.find('\n')) +
                  "); check the frame size against the bundle's input bounds");
    }
  }

 private:
  ov::Core core_;
  ov::CompiledModel compiled_;
  ov::InferRequest request_;
};

std::string openvino_unusable(const Bundle& bundle, const Options&) {
  std::string role = model_role(bundle);
  return bundle.has_role(role) ? std::string()
                               : "the bundle has no " + role + " ONNX for OpenVINO; rebuild it with edgeseg build";
}

std::unique_ptr<Backend> make_openvino(const Bundle& bundle, const Options& options) {
  return std::make_unique<OpenVinoBackend>(bundle, options);
}

}  // namespace

const BackendEntry kOpenVinoBackend{"openvino", openvino_unusable, make_openvino};

}  // namespace edgeseg
