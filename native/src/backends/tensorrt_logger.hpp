// The process's one TensorRT logger (TensorRT 8.5, 8.6, 10.x, 11.x C++ API).
//
// TensorRT keeps a single logger pointer per process: the logger given to the first builder, runtime or
// refitter is used for every later object, and a different later one is ignored ("TensorRT maintains only a
// single logger pointer at any given time", the warning quoted in NVIDIA/TensorRT#1475). A logger owned by a
// runner is therefore wrong twice over: a second runner's errors reach the first runner's logger, and once the
// first runner is destroyed TensorRT calls a destroyed object. So every runner hands TensorRT this one logger,
// which is never destroyed (allocated once, deliberately not freed, so it outlives static destructors too),
// and reads its own errors as "the errors logged since my mark", preferring those of its own thread.
// Thread-safe, as TensorRT requires of a logger (NvInferRuntimeBase.h / 8.5 NvInferRuntimeCommon.h, ILogger).
#pragma once

#include <NvInferRuntime.h>

#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>

namespace edgeseg {
namespace trt {

class ProcessLogger final : public nvinfer1::ILogger {
 public:
  void log(Severity severity, nvinfer1::AsciiChar const* msg) noexcept override {
    if (severity > Severity::kERROR) return;
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      errors_.push_back({next_++, std::this_thread::get_id(), msg ? msg : ""});
      if (errors_.size() > kKept) errors_.pop_front();
    } catch (...) {  // log() is noexcept: an allocation failure drops the message
    }
  }

  // A position in the error sequence; last_error(since) reads only what was logged after it.
  std::uint64_t mark() {
    std::lock_guard<std::mutex> lock(mutex_);
    return next_;
  }

  // The last error logged since `since` by this thread, else by any thread, else "no error logged".
  std::string last_error(std::uint64_t since) {
    std::lock_guard<std::mutex> lock(mutex_);
    const std::string* any = nullptr;
    for (auto it = errors_.rbegin(); it != errors_.rend() && it->seq >= since; ++it) {
      if (it->thread == std::this_thread::get_id()) return it->text.substr(0, 300);
      if (!any) any = &it->text;
    }
    return any ? any->substr(0, 300) : "no error logged";
  }

 private:
  struct Entry {
    std::uint64_t seq;
    std::thread::id thread;
    std::string text;
  };
  static constexpr std::size_t kKept = 200;
  std::mutex mutex_;
  std::deque<Entry> errors_;
  std::uint64_t next_ = 0;
};

// The one instance: made on first use, never destroyed.
inline ProcessLogger& process_logger() {
  static ProcessLogger* const logger = new ProcessLogger();
  return *logger;
}

}  // namespace trt
}  // namespace edgeseg
