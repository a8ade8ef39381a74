// Bundle reading: manifest.json (nlohmann/json), containment of every named file, sha256 (OpenSSL).
// Mirrors edgeseg.bundle.manifest (format, version, files, roles, meaning) and edgeseg.backends.trt_api
// (engine checks).
//
// Meaning (as edgeseg.bundle.manifest): manifest.json carries no hash of its own, so its content is held
// against the hashed files. Each role has its one file name and the roles match the precision; every
// ONNX role file (sha256-checked first) carries edgeseg.* metadata (protobuf metadata_props, read here
// from the wire format: no protobuf library) that must agree with the manifest's model, classes,
// palette, preprocessing, input bounds and output, and name its role's precision; a static class dim
// must equal the class count. An edit of the manifest's meaning is refused unless a hashed file is
// rewritten with it.
#include <openssl/evp.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <map>
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
constexpr int kMaxDepth = 32;                    // edgeseg.json_doc.MAX_DEPTH
constexpr std::uintmax_t kMaxBytes = 64u << 20;  // edgeseg.json_doc.MAX_BYTES
constexpr std::size_t kNameMax = 256;            // edgeseg.bundle.manifest.NAME_MAX

// edgeseg.backends.artifacts.ROLE_FILES: the one file name of each role
const std::vector<std::pair<std::string, std::string>> kRoleFiles = {
    {"fp32", "model.onnx"},           {"fp16", "model.fp16.onnx"},
    {"int8", "model.int8.onnx"},      {"int8_trt", "model.int8.trt.onnx"},
    {"int8_trt_fp16", "model.int8.trt16.onnx"}, {"calibration_cache", "calibration.cache"},
    {"engine", "model.engine"},       {"checkpoint", "checkpoint.pt"}};
// edgeseg.bundle.manifest.ROLE_METADATA: the edgeseg.* metadata each ONNX role's file carries
const std::vector<std::pair<std::string, json>> kRoleMetadata = {
    {"fp32", {{"precision", nullptr}}},
    {"fp16", {{"precision", "fp16"}}},
    {"int8", {{"precision", "int8"}, {"qdq_layout", "cpu"}}},
    {"int8_trt", {{"precision", "int8"}, {"qdq_layout", "trt"}, {"qdq_scale_dtype", "fp32"}}},
    {"int8_trt_fp16", {{"precision", "int8"}, {"qdq_layout", "trt"}, {"qdq_scale_dtype", "fp16"}}}};
// edgeseg.bundle.manifest.MEANING: manifest field (JSON pointer) -> its ONNX metadata key, value when absent
struct Meaning {
  const char* pointer;
  const char* key;
  json absent;
};
const std::vector<Meaning> kMeaning = {{"/model", "model", nullptr},
                                       {"/classes", "classes", nullptr},
                                       {"/palette", "palette", nullptr},
                                       {"/input/shape_bounds", "shape_bounds", nullptr},
                                       {"/input/dynamic", "dynamic", nullptr},
                                       {"/output", "output", "logits"}};
const std::set<std::string> kInt8Roles = {"int8", "int8_trt", "int8_trt_fp16", "calibration_cache"};

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

// A manifest value as one line for an error message (JSON escapes newlines), at most 60 characters.
std::string quote(const json& v) {
  std::string text = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return text.size() <= 60 ? text : text.substr(0, 57) + "...";
}

// The manifest content is refused: which field, what it must be (the caller adds where and the fix).
struct ManifestProblem : std::runtime_error {
  using std::runtime_error::runtime_error;
};

void need(bool ok, const std::string& where, const std::string& expected, const json& got) {
  if (!ok) throw ManifestProblem("'" + where + "' must be " + expected + ", got " + quote(got));
}

// edgeseg.bundle.manifest.name_problem: one printable line (no control character), at most kNameMax bytes.
bool one_line_name(const json& v) {
  if (!v.is_string()) return false;
  const std::string& s = v.get_ref<const std::string&>();
  bool blank = std::all_of(s.begin(), s.end(), [](unsigned char c) { return c == ' '; });
  return !blank && s.size() <= kNameMax &&
         std::none_of(s.begin(), s.end(), [](unsigned char c) { return c < 0x20 || c == 0x7f; });
}

// ---- protobuf wire format: just enough of ONNX's ModelProto to read metadata_props and the output dims
struct Wire {
  const uint8_t* p;
  const uint8_t* end;
};
struct WireField {
  uint32_t number = 0;
  uint64_t value = 0;  // varint fields
  Wire sub{nullptr, nullptr};  // length-delimited fields
  bool delimited = false;
};

uint64_t varint(Wire& w) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (w.p >= w.end) throw std::runtime_error("truncated varint");
    uint8_t byte = *w.p++;
    v |= static_cast<uint64_t>(byte & 0x7f) << shift;
    if (!(byte & 0x80)) return v;
  }
  throw std::runtime_error("varint longer than 10 bytes");
}

bool next_field(Wire& w, WireField& f) {
  if (w.p >= w.end) return false;
  uint64_t key = varint(w);
  f = WireField{static_cast<uint32_t>(key >> 3)};
  std::size_t skip = 0;
  switch (key & 7) {
    case 0: f.value = varint(w); return true;
    case 1: skip = 8; break;
    case 5: skip = 4; break;
    case 2: skip = static_cast<std::size_t>(varint(w)); f.delimited = true; break;
    default: throw std::runtime_error("unsupported wire type " + std::to_string(key & 7));
  }
  if (skip > static_cast<std::size_t>(w.end - w.p)) throw std::runtime_error("field runs past the end");
  f.sub = Wire{w.p, w.p + skip};
  w.p += skip;
  return true;
}

// The first length-delimited field `number` of a message (nullopt when it has none).
std::optional<Wire> sub_message(Wire w, uint32_t number) {
  WireField f;
  while (next_field(w, f))
    if (f.number == number && f.delimited) return f.sub;
  return std::nullopt;
}

struct OnnxFacts {
  std::map<std::string, std::string> metadata;  // every metadata_prop, key -> value
  std::vector<int64_t> output_dims;             // the first graph output's dims, -1 where symbolic
  int outputs = 0;
};

// ModelProto: 7 graph, 14 metadata_props {1 key, 2 value}; GraphProto: 12 output; ValueInfoProto: 2 type;
// TypeProto: 1 tensor_type; Tensor: 2 shape; TensorShapeProto: 1 dim {1 dim_value, 2 dim_param}.
OnnxFacts onnx_facts(const std::vector<uint8_t>& bytes) {
  OnnxFacts facts;
  Wire model{bytes.data(), bytes.data() + bytes.size()};
  WireField f;
  while (next_field(model, f)) {
    if (f.number == 14 && f.delimited) {
      std::string key, value;
      WireField e;
      while (next_field(f.sub, e)) {
        if (e.delimited && e.number == 1) key.assign(reinterpret_cast<const char*>(e.sub.p), e.sub.end - e.sub.p);
        if (e.delimited && e.number == 2) value.assign(reinterpret_cast<const char*>(e.sub.p), e.sub.end - e.sub.p);
      }
      facts.metadata[key] = value;
    } else if (f.number == 7 && f.delimited) {
      Wire graph = f.sub;
      WireField g;
      while (next_field(graph, g)) {
        if (g.number != 12 || !g.delimited || facts.outputs++) continue;
        auto type = sub_message(g.sub, 2);
        auto tensor = type ? sub_message(*type, 1) : std::nullopt;
        auto shape = tensor ? sub_message(*tensor, 2) : std::nullopt;
        if (!shape) continue;
        WireField d;
        while (next_field(*shape, d)) {
          if (d.number != 1 || !d.delimited) continue;
          int64_t dim = -1;
          WireField v;
          while (next_field(d.sub, v))
            if (v.number == 1 && !v.delimited) dim = static_cast<int64_t>(v.value);
          facts.output_dims.push_back(dim);
        }
      }
    }
  }
  return facts;
}

// Preprocessing as edgeseg.data.preprocess.Preprocessing.from_dict(...).to_dict() gives it: every field,
// defaults filled in (scale 1/255, RGB, no size, pil_bilinear: a dict without the field).
json normalized_preprocessing(const json& pp) {
  need(pp.is_object(), "preprocessing", "an object (mean, std, scale, channel_order, size, resize)", pp);
  json out;
  for (const char* key : {"mean", "std"}) {
    const json& v = pp.contains(key) ? pp[key] : json();
    need(v.is_array() && v.size() == 3 && std::all_of(v.begin(), v.end(), [](const json& x) { return x.is_number(); }),
         std::string("preprocessing.") + key, "3 finite numbers", v);
    out[key] = json::array({v[0].get<double>(), v[1].get<double>(), v[2].get<double>()});
  }
  const json scale = pp.value("scale", json(1.0 / 255.0));
  need(scale.is_number() && scale.get<double>() > 0, "preprocessing.scale", "a number > 0", scale);
  out["scale"] = scale.get<double>();
  const json order = pp.value("channel_order", json("RGB"));
  need(order == "RGB" || order == "BGR", "preprocessing.channel_order", "RGB or BGR", order);
  out["channel_order"] = order;
  const json size = pp.value("size", json());
  need(size.is_null() || (size.is_array() && size.size() == 2 && size[0].is_number_integer() &&
                          size[1].is_number_integer() && size[0].get<int64_t>() > 0 && size[1].get<int64_t>() > 0),
       "preprocessing.size", "null or [height, width] (positive integers)", size);
  out["size"] = size;
  const json resize = pp.value("resize", json("pil_bilinear"));
  need(resize.is_string(), "preprocessing.resize", "a string", resize);
  out["resize"] = resize;
  return out;
}

// The value at `pointer`, `absent` where the manifest has no such field.
json at_pointer(const json& m, const char* pointer, const json& absent) {
  json::json_pointer ptr(pointer);
  return m.contains(ptr) ? m.at(ptr) : absent;
}

// Each role of kRoleFiles under its one file name, each such file in its role, the roles matching precision.
void check_roles(const json& m) {
  const json& roles = m.at("roles");
  const json& files = m.at("files");
  const std::string precision = m.at("precision").get<std::string>();
  for (const auto& [role, name] : kRoleFiles) {
    need(!roles.contains(role) || roles[role] == name, "roles." + role, "'" + name + "' (the file name of that role)",
         roles.contains(role) ? roles[role] : json());
    need(!files.contains(name) || roles.contains(role), "roles." + role, "'" + name + "': 'files' lists that file",
         nullptr);
  }
  need(roles.contains("fp32"), "roles.fp32", "'model.onnx': every bundle has its FP32 ONNX", nullptr);
  for (const char* role : {"fp16", "int8", "int8_trt", "int8_trt_fp16", "calibration_cache"}) {
    std::string wanted = kInt8Roles.count(role) ? "int8" : role;
    need(!roles.contains(role) || precision == wanted, "precision", "'" + wanted + "': roles has " + role, precision);
  }
  need(precision == "fp32" || roles.contains(precision), "roles." + precision, "its file in a " + precision + " bundle",
       nullptr);
}

// Every ONNX role file agrees with the manifest (its edgeseg.* metadata, its static class dim).
void check_meaning(const std::string& dir, const json& m, const std::map<std::string, std::string>& sha_of) {
  const json& roles = m.at("roles");
  const json ours_pp = normalized_preprocessing(m.at("preprocessing"));
  for (const auto& [role, identity] : kRoleMetadata) {
    if (!roles.contains(role)) continue;
    const std::string name = roles[role].get<std::string>();
    OnnxFacts facts;
    try {
      facts = onnx_facts(read_checked(dir, name, sha_of.at(name)));
    } catch (const std::runtime_error& e) {
      if (dynamic_cast<const Error*>(&e)) throw;
      throw Error("cannot parse " + name + " as ONNX (" + e.what() + "); the file is truncated or not ONNX: " +
                  rebuild_hint(dir));
    }
    std::map<std::string, json> meta;
    for (const auto& [key, value] : facts.metadata) {
      if (key.rfind("edgeseg.", 0) != 0) continue;
      json parsed = json::parse(value, nullptr, false);
      if (parsed.is_discarded()) throw Error(name + ": metadata " + key + " is not JSON; " + rebuild_hint(dir));
      meta[key.substr(8)] = parsed;
    }
    auto meta_or = [&](const std::string& key, const json& absent) { return meta.count(key) ? meta[key] : absent; };
    for (const auto& f : kMeaning) {
      json ours = at_pointer(m, f.pointer, f.absent), theirs = meta_or(f.key, f.absent);
      std::string where = std::string(f.pointer).substr(1);
      std::replace(where.begin(), where.end(), '/', '.');
      if (ours != theirs)
        throw ManifestProblem("'" + where + "' is " + quote(ours) + " but " + name + " records " + quote(theirs));
    }
    for (const auto& [key, want] : identity.items()) {
      json got = meta_or(key, nullptr);
      if (got != want && !(key == "precision" && want.is_null() && got == "fp32"))
        throw ManifestProblem("'the role " + role + "'s " + key + "' is " + quote(want) + " but " + name +
                              " records " + quote(got));
    }
    json theirs_pp = meta.count("preprocessing") ? normalized_preprocessing(meta["preprocessing"]) : json::object();
    for (const auto& [key, value] : ours_pp.items())
      if (theirs_pp.value(key, json()) != value)
        throw ManifestProblem("'preprocessing." + key + "' is " + quote(value) + " but " + name + " records " +
                              quote(theirs_pp.value(key, json())));
    std::size_t classes = m.at("classes").size();
    if (facts.outputs == 1 && facts.output_dims.size() == 4 && facts.output_dims[1] > 0 &&
        static_cast<std::size_t>(facts.output_dims[1]) != classes)
      throw ManifestProblem("'classes' names " + std::to_string(classes) + " classes but " + name + " outputs " +
                            std::to_string(facts.output_dims[1]) + " channels");
  }
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
  std::error_code size_error;
  if (fs::file_size(mpath, size_error) > kMaxBytes)
    throw Error(mpath.string() + " is larger than 64 MB, not a manifest edgeseg wrote; " + rebuild_hint(dir));
  json m;
  try {
    std::ifstream in(mpath, std::ios::binary);
    auto depth_limit = [&](int depth, json::parse_event_t, json&) {
      if (depth > kMaxDepth)
        throw Error(mpath.string() + " nests arrays/objects deeper than " + std::to_string(kMaxDepth) +
                    " levels, not a manifest edgeseg wrote; " + rebuild_hint(dir));
      return true;
    };
    m = json::parse(in, depth_limit);
  } catch (const json::exception& e) {
    std::string why = e.what();  // quotes the bytes it read last: keep the line printable ASCII
    std::replace_if(why.begin(), why.end(), [](unsigned char c) { return c < 0x20 || c > 0x7e; }, '?');
    throw Error(mpath.string() + " is not valid JSON (" + why + "); " + rebuild_hint(dir));
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
    if (!roles.is_object()) throw Error(where + ": 'roles' must map roles to file names; rebuild the bundle");
    for (auto it = roles.begin(); it != roles.end(); ++it) {
      std::string name = it.value().get<std::string>();
      require_plain_name(dir, name, "roles." + it.key());
      if (!b.sha_of(name))
        throw Error("bundle " + dir + ": role " + it.key() + " names " + name +
                    ", which is not listed with a sha256 in the manifest's files; " + rebuild_hint(dir));
      contained_path(dir, name);
      b.roles_.emplace_back(it.key(), name);
    }

    b.precision_ = field(m, "precision", where).get<std::string>();
    if (b.precision_ != "fp32" && b.precision_ != "fp16" && b.precision_ != "int8")
      throw Error(where + ": precision must be fp32, fp16 or int8, got " + quote(b.precision_) + "; rebuild");
    const json& model = m.contains("model") ? m["model"] : json();
    if (!model.is_null() && !one_line_name(model))
      throw Error(where + ": model must be one printable line, got " + quote(model) + "; rebuild the bundle");
    for (const auto& c : field(m, "classes", where)) {
      if (!one_line_name(c))
        throw Error(where + ": class names must be one printable line each (labels files hold one per line), got " +
                    quote(c) + "; rebuild the bundle");
      b.classes_.push_back(c.get<std::string>());
    }
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

    json pp;
    try {
      pp = normalized_preprocessing(field(m, "preprocessing", where));
    } catch (const ManifestProblem& e) {
      throw Error(where + ": " + e.what() + "; rebuild the bundle");
    }
    Preprocessing& p = b.preprocessing_;
    for (int i = 0; i < 3; ++i) {
      p.mean[i] = pp["mean"][i].get<float>();
      p.std[i] = pp["std"][i].get<float>();
      if (!(p.std[i] > 0)) throw Error(where + ": preprocessing std must be > 0, got " + pp["std"].dump());
    }
    p.scale = pp["scale"].get<float>();
    p.network_bgr = pp["channel_order"] == "BGR";
    if (!pp["size"].is_null()) {
      p.height = pp["size"][0].get<int>();
      p.width = pp["size"][1].get<int>();
    }
    std::string resize = pp["resize"].get<std::string>();
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
    std::map<std::string, std::string> sha_of(b.files_.begin(), b.files_.end());
    try {
      check_roles(m);
      check_meaning(dir, m, sha_of);
    } catch (const ManifestProblem& e) {
      throw Error(where + " is refused: " + e.what() + "; the manifest was edited or is broken: " +
                  rebuild_hint(dir));
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
