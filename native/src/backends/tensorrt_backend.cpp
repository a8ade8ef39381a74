// TensorRT backend (8.5, 8.6, 10.x, 11.x C++ API): deserialises the bundle's engine from its sha256-checked
// bytes after the compatibility check edgeseg.load makes, one execution context and one non-default
// CUDA stream per runner, name-based I/O (setInputShape / setTensorAddress / enqueueV3, all 8.5+),
// dynamic shapes within profile 0. Every runner hands TensorRT the process's one logger
// (tensorrt_logger.hpp). Version differences are guarded by NV_TENSORRT_MAJOR / NV_TENSORRT_MINOR.
#include <NvInfer.h>
#include <NvInferVersion.h>
#include <cuda_runtime_api.h>

#include <cstdint>
#include <fstream>
#include <type_traits>
#include <sstream>

#include "../backend.hpp"
#include "tensorrt_logger.hpp"

#if NV_TENSORRT_MAJOR > 8 || (NV_TENSORRT_MAJOR == 8 && NV_TENSORRT_MINOR >= 6)
#define EDGESEG_TRT_HAS_HOST_CODE 1  // IRuntime::setEngineHostCodeAllowed and version-compatible plans: 8.6+
#else
#define EDGESEG_TRT_HAS_HOST_CODE 0
#endif

namespace edgeseg {

namespace {

const char* kRebuild = "edgeseg build --from ";

void cuda_check(cudaError_t status, const char* what) {
  if (status != cudaSuccess)
    throw Error(std::string("CUDA ") + what + " failed (" + cudaGetErrorString(status) +
                "); check the driver, the GPU memory and CUDA_VISIBLE_DEVICES, or use the openvino backend");
}

constexpr std::uintptr_t kAddressAlignment = 256;  // setTensorAddress: "at least 256-byte alignment"

std::string library_version() {
#if NV_TENSORRT_MAJOR >= 10
  return std::to_string(getInferLibMajorVersion()) + "." + std::to_string(getInferLibMinorVersion()) + "." +
         std::to_string(getInferLibPatchVersion());
#else
  const int v = getInferLibVersion();  // 8.x: major * 1000 + minor * 100 + patch
  return std::to_string(v / 1000) + "." + std::to_string((v / 100) % 10) + "." + std::to_string(v % 100);
#endif
}

RuntimeRecord runtime_record(int device) {
  cudaDeviceProp prop{};
  cuda_check(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  return {library_version(), std::to_string(prop.major) + "." + std::to_string(prop.minor), prop.name};
}

// The library reports major.minor.patch; the manifest may add the build number (10.3.0.26).
EngineRecord comparable(EngineRecord built) {
  int dots = 0;
  for (std::size_t i = 0; i < built.trt_version.size(); ++i)
    if (built.trt_version[i] == '.' && ++dots == 3) built.trt_version.resize(i);
  return built;
}

std::string dims_text(const nvinfer1::Dims& d) {
  std::ostringstream s;
  s << "(";
  for (int i = 0; i < d.nbDims; ++i) s << (i ? ", " : "") << d.d[i];
  s << ")";
  return s.str();
}

class TensorRtBackend final : public Backend {
 public:
  TensorRtBackend(const Bundle& bundle, const Options& options) : device_(options.device) {
    rebuild_ = std::string(kRebuild) + bundle.root() + " --backend trt";
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    const std::vector<uint8_t> plan = bundle.read_verified("engine");
    auto since = logger_.mark();
    runtime_.reset(nvinfer1::createInferRuntime(logger_));
    if (!runtime_) throw Error("TensorRT runtime creation failed (" + logger_.last_error(since) + ")");
    const EngineRecord& record = *bundle.engine();
    if (record.dla_core) runtime_->setDLACore(*record.dla_core);
#if EDGESEG_TRT_HAS_HOST_CODE
    if (record.version_compatible) runtime_->setEngineHostCodeAllowed(true);  // lean runtime in the plan (8.6+)
#else
    if (record.version_compatible)
      throw Error("TensorRT " + library_version() + " cannot run version-compatible plans (8.6+); rebuild the engine "
                  "here with `" + rebuild_ + "`");
#endif
    since = logger_.mark();
    engine_.reset(runtime_->deserializeCudaEngine(plan.data(), plan.size()));
    if (!engine_)
      throw Error("TensorRT " + library_version() + " cannot load " + bundle.role_path("engine") + " (" +
                  logger_.last_error(since) + "); the file is corrupt or was built for another TensorRT version or "
                  "GPU; rebuild it with `" + rebuild_ + "`");
    std::vector<std::string> inputs, outputs;
    for (int i = 0; i < engine_->getNbIOTensors(); ++i) {
      const char* name = engine_->getIOTensorName(i);
      (engine_->getTensorIOMode(name) == nvinfer1::TensorIOMode::kINPUT ? inputs : outputs).emplace_back(name);
    }
    if (inputs.size() != 1 || outputs.size() != 1)
      throw Error(bundle.role_path("engine") + " has " + std::to_string(inputs.size()) + " inputs and " +
                  std::to_string(outputs.size()) + " outputs; edgeseg engines have one (N, 3, H, W) input and one "
                  "output: rebuild from an edgeseg ONNX with `" + rebuild_ + "`");
    input_ = inputs[0];
    output_ = outputs[0];
    for (const auto& n : {input_, output_})
      if (engine_->getTensorDataType(n.c_str()) != nvinfer1::DataType::kFLOAT)
        throw Error("engine tensor " + n + " is not float32; edgeseg engines keep FP32 I/O: rebuild with `" +
                    rebuild_ + "`");
    min_ = engine_->getProfileShape(input_.c_str(), 0, nvinfer1::OptProfileSelector::kMIN);
    max_ = engine_->getProfileShape(input_.c_str(), 0, nvinfer1::OptProfileSelector::kMAX);
    since = logger_.mark();
    context_.reset(engine_->createExecutionContext());
    if (!context_) throw Error("TensorRT could not create an execution context (" + logger_.last_error(since) + ")");
    cuda_check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~TensorRtBackend() override {
    if (stream_) cudaStreamDestroy(stream_);
    for (void* p : {in_dev_, out_dev_})
      if (p) cudaFree(p);
    context_.reset();  // context before engine before runtime
    engine_.reset();
    runtime_.reset();
  }

  std::string name() const override { return "tensorrt"; }

  void infer(const float* input, const std::array<int64_t, 4>& shape, std::vector<float>& out,
             std::array<int64_t, 4>& out_shape) override {
    // The calling thread may have made another GPU current since construction: CUDA's current device is
    // per thread, and the engine's memory and stream live on device_.
    cuda_check(cudaSetDevice(device_), "cudaSetDevice");
    nvinfer1::Dims dims{};
    dims.nbDims = 4;
    for (int i = 0; i < 4; ++i) dims.d[i] = static_cast<std::remove_reference_t<decltype(dims.d[0])>>(shape[i]);
    auto since = logger_.mark();
    if (!context_->setInputShape(input_.c_str(), dims))
      throw Error("TensorRT refused input shape " + dims_text(dims) + " (" + logger_.last_error(since) +
                  "); use a shape between " + dims_text(min_) + " and " + dims_text(max_));
    const nvinfer1::Dims od = context_->getTensorShape(output_.c_str());
    if (od.nbDims != 4) throw Error("engine output " + output_ + " has shape " + dims_text(od) + ", expected NCHW");
    std::size_t in_bytes = sizeof(float), out_count = 1;
    for (int i = 0; i < 4; ++i) {
      in_bytes *= static_cast<std::size_t>(shape[i]);
      out_count *= static_cast<std::size_t>(od.d[i]);
      out_shape[i] = od.d[i];
    }
    reserve(in_dev_, in_cap_, in_bytes);
    reserve(out_dev_, out_cap_, out_count * sizeof(float));
    out.resize(out_count);
    cuda_check(cudaMemcpyAsync(in_dev_, input, in_bytes, cudaMemcpyHostToDevice, stream_), "cudaMemcpyAsync");
    bind(input_, in_dev_);
    bind(output_, out_dev_);
    since = logger_.mark();
    if (!context_->enqueueV3(stream_))
      throw Error("TensorRT inference failed (" + logger_.last_error(since) +
                  "); check the input and the GPU memory, or rebuild the engine with `" + rebuild_ + "`");
    cuda_check(cudaMemcpyAsync(out.data(), out_dev_, out_count * sizeof(float), cudaMemcpyDeviceToHost, stream_),
               "cudaMemcpyAsync");
    cuda_check(cudaStreamSynchronize(stream_), "cudaStreamSynchronize");
  }

 private:
  // setTensorAddress with its result checked; cudaMalloc memory meets the 256-byte alignment it requires.
  void bind(const std::string& name, void* address) {
    if (reinterpret_cast<std::uintptr_t>(address) % kAddressAlignment != 0)
      throw Error("TensorRT tensor " + name + " needs a 256-byte aligned address");
    const auto since = logger_.mark();
    if (!context_->setTensorAddress(name.c_str(), address))
      throw Error("TensorRT refused the address of tensor " + name + " (" + logger_.last_error(since) +
                  "); rebuild the engine with `" + rebuild_ + "`");
  }

  static void reserve(void*& ptr, std::size_t& cap, std::size_t bytes) {
    if (bytes <= cap) return;
    if (ptr) cudaFree(ptr);
    ptr = nullptr;
    cuda_check(cudaMalloc(&ptr, bytes), "cudaMalloc");
    cap = bytes;
  }

  int device_;
  std::string rebuild_, input_, output_;
  trt::ProcessLogger& logger_ = trt::process_logger();  // never destroyed: outlives every TensorRT object
  std::unique_ptr<nvinfer1::IRuntime> runtime_;  // delete is the release call on 8.x (destroy() deprecated) and later
  std::unique_ptr<nvinfer1::ICudaEngine> engine_;
  std::unique_ptr<nvinfer1::IExecutionContext> context_;
  nvinfer1::Dims min_{}, max_{};
  cudaStream_t stream_ = nullptr;
  void *in_dev_ = nullptr, *out_dev_ = nullptr;
  std::size_t in_cap_ = 0, out_cap_ = 0;
};

// This machine's platform, spelled as edgeseg.backends.trt_device.platform_record spells it.
std::string this_os() {
#if defined(_WIN32)
  return "win32";
#elif defined(__linux__)
  return "linux";
#else
  return "other";
#endif
}

std::string this_arch() {
#if defined(__aarch64__) || defined(_M_ARM64)
  return "aarch64";
#elif defined(__x86_64__) || defined(_M_X64)
  return "x86_64";
#else
  return "other";
#endif
}

bool this_is_jetson() { return std::ifstream("/etc/nv_tegra_release").good(); }  // an L4T system

std::string platform_text(const std::string& os, const std::string& arch, bool jetson) {
  return os + " " + arch + (jetson ? " (Jetson)" : " (discrete GPU)");
}

// edgeseg.backends.trt_api.platform_problems: plans are not portable across platforms, and hardware-compatible
// plans do not exist on Jetson (TensorRT developer guide, "Hardware Compatibility").
std::vector<std::string> platform_problems(const EngineRecord& built) {
  std::vector<std::string> problems;
  const bool jetson = this_is_jetson();
  const bool built_jetson = built.platform_jetson.value_or(false);
  if (!built.platform_os.empty() &&
      (built.platform_os != this_os() || built.platform_arch != this_arch() || built_jetson != jetson))
    problems.push_back("built on " + platform_text(built.platform_os, built.platform_arch, built_jetson) +
                       ", this machine is " + platform_text(this_os(), this_arch(), jetson) +
                       " (plans are not portable across platforms)");
  if (built.hardware_compatible != "none" && jetson)
    problems.push_back("the plan is hardware-compatible (" + built.hardware_compatible +
                       ") and hardware-compatible plans are not supported on Jetson");
  return problems;
}

std::string tensorrt_unusable(const Bundle& bundle, const Options& options) {
  if (!bundle.has_role("engine") || !bundle.engine())
    return bundle.root() + " has no TensorRT engine; on the device run `" + std::string(kRebuild) + bundle.root() +
           " --backend trt`";
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= options.device)
    return "no CUDA GPU " + std::to_string(options.device) + " here for TensorRT; use the openvino backend";
  auto problems = engine_problems(comparable(*bundle.engine()), runtime_record(options.device));
  for (auto& p : platform_problems(*bundle.engine())) problems.push_back(std::move(p));
  if (problems.empty()) return {};
  std::string all;
  for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
  return "engine " + bundle.role_path("engine") + " cannot run here: " + all + "; rebuild it on this device with `" +
         std::string(kRebuild) + bundle.root() + " --backend trt`";
}

std::unique_ptr<Backend> make_tensorrt(const Bundle& bundle, const Options& options) {
  return std::make_unique<TensorRtBackend>(bundle, options);
}

}  // namespace

const BackendEntry kTensorRtBackend{"tensorrt", tensorrt_unusable, make_tensorrt};

}  // namespace edgeseg
