// Bundle reading: manifest.json (nlohmann/json), containment of every named file, sha256 (OpenSSL).
// Mirrors edgeseg.artifacts (format, version, files) and edgeseg.backends.trt_api (engine checks).
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "edgeseg/runtime.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

namespace edgeseg {

namespace {

constexpr const char* kFormat = "edgeseg.bundle";
constexpr int kMaxVersion = 1;  // edgeseg.artifacts.BUNDLE_VERSION this runtime reads
constexpr const char* kManifest = "manifest.json";

std::string rebuild_hint(const std::string& root) {
  return "rebuild it (edgeseg build ... --out " + root + ") or restore the files";
}

// A manifest path must be a plain relative name: not empty, not absolute, no "..", no "." parts.
void require_plain_name(const std::string& root, const std::string& name, const std::string& where) {
  fs::path p(name);
  bool bad = name.empty() || p.is_absolute() || name.find('\\') != std::string::npos ||
             name.find('\0') != std::string::npos;
  for (const auto& part : p)
    if (part == ".." || part == "." || part.empty()) bad = true;
  if (bad)
    throw Error("bundle " + root + ": " + where + " names '" + name +
                "', expected a plain relative file name inside the bundle folder; the manifest was edited or "
                "is not from edgeseg: " + rebuild_hint(root));
}

// The file must resolve (following symlinks) inside the bundle folder.
fs::path contained_path(const std::string& root, const std::string& name) {
  fs::path full = fs::path(root) / name;
  std::error_code ec;
  fs::path real_root = fs::canonical(root, ec);
  if (ec) throw Error("bundle folder " + root + " cannot be resolved (" + ec.message() + "); check the path");
  if (!fs::exists(fs::symlink_status(full))) return full;  // missing: reported by the caller
  fs::path real = fs::weakly_canonical(full, ec);
  if (ec) throw Error("bundle " + root + ": cannot resolve " + name + " (" + ec.message() + ")");
  auto rel = real.lexically_relative(real_root);
  if (rel.empty() || *rel.begin() == "..")
    throw Error("bundle " + root + ": " + name + " resolves to " + real.string() +
                ", outside the bundle folder (a symlink leading out); expected the file itself inside the bundle: " +
                rebuild_hint(root));
  return real;
}

const json& field(const json& obj, const char* key, const std::string& path) {
  if (!obj.is_object() || !obj.contains(key))
    throw Error(path + ": manifest field '" + key + "' is missing; rebuild the bundle with a current edgeseg");
  return obj.at(key);
}

std::array<int64_t, 4> shape4(const json& v, const std::string& what) {
  if (!v.is_array() || v.size() != 4)
    throw Error(what + " must be 4 integers (N, C, H, W), got " + v.dump() + "; rebuild the bundle");
  std::array<int64_t, 4> s{};
  for (int i = 0; i < 4; ++i) s[i] = v[i].get<int64_t>();
  return s;
}

std::vector<int> version_tuple(const std::string& version) {
  std::vector<int> parts;
  std::stringstream ss(version);
  std::string part;
  while (std::getline(ss, part, '.')) {
    std::size_t n = 0;
    while (n < part.size() && std::isdigit(static_cast<unsigned char>(part[n]))) ++n;
    if (n == 0) break;
    parts.push_back(std::stoi(part.substr(0, n)));
  }
  if (parts.empty()) throw Error("TensorRT version must look like 10.3.0, got '" + version + "'");
  return parts;
}

std::array<int, 2> compute_capability(const std::string& cc) {
  auto dot = cc.find('.');
  try {
    if (dot == std::string::npos) throw std::invalid_argument(cc);
    return {std::stoi(cc.substr(0, dot)), std::stoi(cc.substr(dot + 1))};
  } catch (const std::exception&) {
    throw Error("compute capability must look like 8.7, got '" + cc + "'");
  }
}

bool version_runs(const std::string& built, const std::string& runtime, bool version_compatible) {
  auto b = version_tuple(built), r = version_tuple(runtime);
  std::size_t width = std::max(b.size(), r.size());
  b.resize(width, 0);
  r.resize(width, 0);
  if (b == r) return true;
  if (!version_compatible || std::vector<int>(b.begin(), b.begin() + std::min<std::size_t>(2, width)) <
                                 std::vector<int>{8, 6} || r < b)
    return false;
  return b[0] == r[0] || (b[0] == 8 && r[0] == 10) || (b[0] == 10 && r[0] == 11);
}

std::string hardware_level(const json& v) {
  if (v.is_boolean()) return v.get<bool>() ? "ampere_plus" : "none";
  if (v.is_null()) return "none";
  std::string s = v.get<std::string>();
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  if (s != "none" && s != "ampere_plus" && s != "same_compute_capability")
    throw Error("engine hardware_compatible must be none, ampere_plus or same_compute_capability, got '" + s +
                "'; rebuild the engine");
  return s;
}

}  // namespace

std::string sha256_hex(const uint8_t* data, std::size_t size) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(data, size, md, &len, EVP_sha256(), nullptr) != 1) throw Error("OpenSSL SHA-256 failed");
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < len; ++i) {
    out += hex[md[i] >> 4];
    out += hex[md[i] & 15];
  }
  return out;
}

std::vector<std::string> engine_problems(const EngineRecord& built, const RuntimeRecord& runtime) {
  if (built.trt_version.empty() || built.compute_capability.empty())
    throw Error("the engine record lacks trt_version or compute_capability; rebuild the engine so its manifest "
                "records them");
  std::vector<std::string> problems;
  if (!version_runs(built.trt_version, runtime.trt_version, built.version_compatible))
    problems.push_back("built with TensorRT " + built.trt_version + ", this runtime is TensorRT " +
                       runtime.trt_version +
                       (built.version_compatible
                            ? " (version-compatible plans run only on the same or a later TensorRT of the same "
                              "major, or 8 -> 10 and 10 -> 11)"
                            : " (the plan is not version-compatible)"));
  auto b = compute_capability(built.compute_capability), r = compute_capability(runtime.compute_capability);
  auto cc = [](std::array<int, 2> v) { return std::to_string(v[0]) + "." + std::to_string(v[1]); };
  if (built.hardware_compatible == "ampere_plus") {
    if (r < std::array<int, 2>{8, 0})
      problems.push_back("built for Ampere or newer GPUs (compute capability >= 8.0), this GPU is " + cc(r));
  } else if (b != r) {
    problems.push_back("built for compute capability " + cc(b) + ", this GPU is " + cc(r));
  } else if (built.hardware_compatible == "none" && !built.gpu.empty() && !runtime.gpu.empty() &&
             built.gpu != runtime.gpu) {
    problems.push_back("built on " + built.gpu + ", this GPU is " + runtime.gpu +
                       " (the plan is not hardware-compatible)");
  }
  return problems;
}

Bundle Bundle::open(const std::string& dir) {
  Bundle b;
  b.root_ = dir;
  fs::path mpath = fs::path(dir) / kManifest;
  if (!fs::is_regular_file(mpath))
    throw Error(dir + " is not an edgeseg bundle (no " + std::string(kManifest) +
                "); expected a folder written by `edgeseg build`: build one with `edgeseg build`");
  json m;
  try {
    std::ifstream in(mpath);
    m = json::parse(in);
  } catch (const json::exception& e) {
    throw Error(mpath.string() + " is not valid JSON (" + e.what() + "); rebuild the bundle");
  }
  const std::string where = mpath.string();
  try {
    if (!m.is_object() || m.value("format", std::string()) != kFormat)
      throw Error(where + " is not an edgeseg bundle manifest (format '" + std::string(kFormat) +
                  "' expected); point at a folder written by `edgeseg build`");
    int version = m.contains("version") && m["version"].is_number_integer() ? m["version"].get<int>() : 0;
    if (version < 1 || version > kMaxVersion)
      throw Error(dir + " has bundle version " + (m.contains("version") ? m["version"].dump() : "none") +
                  " (written by edgeseg " + m.value("edgeseg_version", std::string("?")) +
                  "); this native runtime reads version 1 to " + std::to_string(kMaxVersion) +
                  (version > kMaxVersion ? ": upgrade the edgeseg native runtime" : ": rebuild the bundle"));

    // files: every name contained, every entry with a 64-hex sha256
    const json& files = field(m, "files", where);
    if (!files.is_object()) throw Error(where + ": 'files' must map file names to sha256; rebuild the bundle");
    for (auto it = files.begin(); it != files.end(); ++it) {
      require_plain_name(dir, it.key(), "files");
      std::string sha = it.value().is_object() ? it.value().value("sha256", std::string()) : std::string();
      if (sha.size() != 64 || sha.find_first_not_of("0123456789abcdef") != std::string::npos)
        throw Error(where + ": files." + it.key() + " has no valid sha256; rebuild the bundle");
      contained_path(dir, it.key());
      b.files_.emplace_back(it.key(), sha);
    }
    // roles: every file named must be listed in files
    const json& roles = field(m, "roles", where);
    for (auto it = roles.begin(); it != roles.end(); ++it) {
      if (it.value().is_null()) continue;
      std::string name = it.value().get<std::string>();
      require_plain_name(dir, name, "roles." + it.key());
      if (!b.sha_of(name))
        throw Error("bundle " + dir + ": role " + it.key() + " names " + name +
                    ", which is not listed with a sha256 in the manifest's files; " + rebuild_hint(dir));
      contained_path(dir, name);
      b.roles_.emplace_back(it.key(), name);
    }

    b.precision_ = field(m, "precision", where).get<std::string>();
    for (const auto& c : field(m, "classes", where)) b.classes_.push_back(c.get<std::string>());
    for (const auto& c : field(m, "palette", where)) {
      if (!c.is_array() || c.size() != 3) throw Error(where + ": palette entries must be [r, g, b]; rebuild");
      std::array<uint8_t, 3> rgb{};
      for (int i = 0; i < 3; ++i) {
        int v = c[i].get<int>();
        if (v < 0 || v > 255) throw Error(where + ": palette values must be 0..255, got " + c.dump());
        rgb[i] = static_cast<uint8_t>(v);
      }
      b.palette_.push_back(rgb);
    }
    if (b.classes_.empty() || b.classes_.size() > 256)
      throw Error(where + ": expected 1 to 256 classes, got " + std::to_string(b.classes_.size()) +
                  "; the native runtime writes 8-bit class maps");

    const json& pp = field(m, "preprocessing", where);
    Preprocessing& p = b.preprocessing_;
    const json& mean = field(pp, "mean", where), &stdv = field(pp, "std", where);
    if (!mean.is_array() || !stdv.is_array() || mean.size() != 3 || stdv.size() != 3)
      throw Error(where + ": preprocessing mean and std need 3 values each, got " + pp.dump() + "; rebuild");
    for (int i = 0; i < 3; ++i) {
      p.mean[i] = mean[i].get<float>();
      p.std[i] = stdv[i].get<float>();
      if (!(p.std[i] > 0)) throw Error(where + ": preprocessing std must be > 0, got " + stdv.dump());
    }
    p.scale = pp.contains("scale") ? pp["scale"].get<float>() : 1.0f / 255.0f;
    std::string order = pp.value("channel_order", std::string("RGB"));
    if (order != "RGB" && order != "BGR")
      throw Error(where + ": channel_order must be RGB or BGR, got " + order + "; rebuild the bundle");
    p.network_bgr = order == "BGR";
    if (pp.contains("size") && !pp["size"].is_null()) {
      p.height = pp["size"].at(0).get<int>();
      p.width = pp["size"].at(1).get<int>();
      if (p.height <= 0 || p.width <= 0) throw Error(where + ": preprocessing size must be positive");
    }
    std::string resize = pp.contains("resize") ? pp["resize"].get<std::string>() : "pil_bilinear";
    if (resize == "bilinear")
      p.resize = ResizeMode::Bilinear;
    else if (resize == "pil_bilinear")
      p.resize = ResizeMode::PilBilinear;
    else
      throw Error(where + ": preprocessing resize '" + resize +
                  "' is unknown (this runtime knows bilinear, pil_bilinear); upgrade the edgeseg native runtime");

    const json& input = field(m, "input", where);
    b.input_name_ = input.value("name", std::string("input"));
    bool have_bounds = false;
    if (input.contains("shape_bounds") && input["shape_bounds"].is_object()) {
      const json& sb = input["shape_bounds"];
      const json* entry = sb.contains(b.input_name_) ? &sb[b.input_name_] : (sb.size() == 1 ? &*sb.begin() : nullptr);
      if (entry) {
        b.bounds_.min = shape4(field(*entry, "min", where), where + " input min");
        b.bounds_.max = shape4(field(*entry, "max", where), where + " input max");
        have_bounds = true;
      }
    }
    if (!have_bounds) {
      if (!p.height) throw Error(where + ": no input shape bounds and no preprocessing size; rebuild the bundle");
      b.bounds_.min = b.bounds_.max = {1, 3, p.height, p.width};
    }

    if (m.contains("engine") && m["engine"].is_object()) {
      const json& e = m["engine"];
      EngineRecord r;
      r.trt_version = e.value("trt_version", std::string());
      r.compute_capability = e.value("compute_capability", std::string());
      r.gpu = e.value("gpu", std::string());
      r.version_compatible = e.value("version_compatible", false);
      r.hardware_compatible = hardware_level(e.contains("hardware_compatible") ? e["hardware_compatible"] : json());
      if (e.contains("dla_core") && e["dla_core"].is_number_integer()) r.dla_core = e["dla_core"].get<int>();
      if (e.contains("platform") && e["platform"].is_object()) {
        const json& pl = e["platform"];
        r.platform_os = pl.value("os", std::string());
        r.platform_arch = pl.value("arch", std::string());
        if (pl.contains("jetson") && pl["jetson"].is_boolean()) r.platform_jetson = pl["jetson"].get<bool>();
      }
      b.engine_ = r;
    }
  } catch (const json::exception& e) {
    throw Error(where + " has a field of the wrong type (" + e.what() + "); rebuild the bundle with edgeseg build");
  }
  return b;
}

const std::string* Bundle::sha_of(const std::string& name) const {
  for (const auto& f : files_)
    if (f.first == name) return &f.second;
  return nullptr;
}

bool Bundle::has_role(const std::string& role) const {
  return std::any_of(roles_.begin(), roles_.end(), [&](const auto& r) { return r.first == role; });
}

std::string Bundle::role_path(const std::string& role) const {
  for (const auto& r : roles_)
    if (r.first == role) return contained_path(root_, r.second).string();
  throw Error("bundle " + root_ + " has no " + role + " file (roles in its manifest); build a bundle that has it");
}

namespace {
std::vector<uint8_t> read_checked(const std::string& root, const std::string& name, const std::string& sha) {
  fs::path path = contained_path(root, name);
  std::ifstream in(path, std::ios::binary);
  if (!in || !fs::is_regular_file(path))
    throw Error("bundle " + root + " does not match its manifest: " + name + " is missing; " + rebuild_hint(root));
  std::vector<uint8_t> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (sha256_hex(bytes.data(), bytes.size()) != sha)
    throw Error("bundle " + root + " does not match its manifest: " + name +
                " changed (sha256 differs from the manifest); " + rebuild_hint(root));
  return bytes;
}
}  // namespace

std::vector<uint8_t> Bundle::read_verified(const std::string& role) const {
  for (const auto& r : roles_)
    if (r.first == role) return read_checked(root_, r.second, *sha_of(r.second));
  throw Error("bundle " + root_ + " has no " + role + " file (roles in its manifest); build a bundle that has it");
}

void Bundle::verify_all() const {
  std::vector<std::string> problems;
  for (const auto& f : files_) {
    try {
      read_checked(root_, f.first, f.second);
    } catch (const Error& e) {
      std::string msg = e.what();
      auto start = msg.find(": ") + 2, end = msg.rfind("; rebuild");
      problems.push_back(msg.substr(start, end - start));
    }
  }
  if (!problems.empty()) {
    std::string all;
    for (const auto& p : problems) all += (all.empty() ? "" : "; ") + p;
    throw Error("bundle " + root_ + " does not match its manifest: " + all + "; " + rebuild_hint(root_));
  }
}

}  // namespace edgeseg
