// Native unit tests (ctest "runtime"): bundle reading and refusals, SHA-256, engine compatibility,
// CPU pre/post-processing properties, the C API's error path. Python-side parity is tests/native.
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include <unistd.h>
#include <algorithm>

#include "edgeseg/edgeseg.h"
#include "edgeseg/runtime.hpp"

namespace fs = std::filesystem;
using nlohmann::json;

static int failures = 0, checks = 0;
#define CHECK(cond)                                                    \
  do {                                                                 \
    ++checks;                                                          \
    if (!(cond)) {                                                     \
      ++failures;                                                      \
      std::fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                  \
  } while (0)

// The Error text of f() (empty when it does not throw).
static std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const edgeseg::Error& e) {
    return e.what();
  }
  return "";
}
static bool has(const std::string& s, const std::string& part) { return s.find(part) != std::string::npos; }

// ---------------------------------------------------------------- bundles
static fs::path scratch_root() {
  fs::path root = fs::temp_directory_path() / ("edgeseg-native-test-" + std::to_string(::getpid()));
  fs::remove_all(root);
  fs::create_directories(root);
  return root;
}

static std::string write_file(const fs::path& p, const std::string& content) {
  std::ofstream(p, std::ios::binary) << content;
  return edgeseg::sha256_hex(reinterpret_cast<const uint8_t*>(content.data()), content.size());
}

// ---- a minimal ONNX file: protobuf wire format with edgeseg.* metadata_props and one (N, C, H, W) output
static std::string pb_varint(uint64_t v) {
  std::string out;
  do {
    out += static_cast<char>((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
    v >>= 7;
  } while (v);
  return out;
}
static std::string pb_bytes(int field, const std::string& data) {
  return pb_varint(static_cast<uint64_t>(field) << 3 | 2) + pb_varint(data.size()) + data;
}
static std::string pb_int(int field, uint64_t v) { return pb_varint(static_cast<uint64_t>(field) << 3) + pb_varint(v); }

// What edgeseg export writes into an ONNX for `m`'s meaning (classes, palette, preprocessing, bounds), plus `extra`.
static std::string fake_onnx(const json& m, int channels, const json& extra = json::object()) {
  json meta = {{"classes", m["classes"]}, {"palette", m["palette"]}, {"preprocessing", m["preprocessing"]},
               {"shape_bounds", m["input"]["shape_bounds"]}};
  meta.update(extra);
  std::string model = pb_int(1, 8);  // ir_version
  std::string shape;
  for (int d : {1, channels, 8, 12}) shape += pb_bytes(1, pb_int(1, d));
  std::string output = pb_bytes(1, "logits") + pb_bytes(2, pb_bytes(1, pb_int(1, 1) + pb_bytes(2, shape)));
  model += pb_bytes(7, pb_bytes(12, output));
  for (const auto& [key, value] : meta.items()) model += pb_bytes(14, pb_bytes(1, "edgeseg." + key) + pb_bytes(2, value.dump()));
  return model;
}

static json base_manifest() {
  return json{{"format", "edgeseg.bundle"},
              {"version", 1},
              {"edgeseg_version", "0.1.0"},
              {"classes", {"a", "b"}},
              {"palette", {{0, 0, 0}, {255, 0, 0}}},
              {"preprocessing",
               {{"mean", {0.5, 0.5, 0.5}}, {"std", {0.25, 0.25, 0.25}}, {"scale", 1.0 / 255}, {"channel_order", "RGB"},
                {"size", {8, 12}}, {"resize", "bilinear"}}},
              {"precision", "fp32"},
              {"input", {{"name", "input"}, {"shape_bounds", {{"input", {{"min", {1, 3, 8, 12}}, {"max", {1, 3, 8, 12}}}}}}}},
              {"engine", nullptr},
              {"roles", {{"fp32", "model.onnx"}}}};
}

// `m` with its model.onnx written as `onnx` and hashed into `files`.
static json with_model(const fs::path& dir, json m, const std::string& onnx) {
  std::string sha = write_file(dir / "model.onnx", onnx);
  m["files"] = {{"model.onnx", {{"sha256", sha}, {"bytes", onnx.size()}}}};
  return m;
}

static void save(const fs::path& dir, const json& m) { std::ofstream(dir / "manifest.json") << m.dump(1); }

static void test_bundles(const fs::path& root) {
  fs::path dir = root / "b";
  fs::create_directories(dir);
  const std::string onnx = fake_onnx(base_manifest(), 2);
  json m = with_model(dir, base_manifest(), onnx);
  save(dir, m);
  auto b = edgeseg::Bundle::open(dir.string());
  CHECK(b.classes().size() == 2 && b.palette()[1][0] == 255);
  CHECK(b.preprocessing().height == 8 && b.preprocessing().width == 12);
  CHECK(b.preprocessing().resize == edgeseg::ResizeMode::Bilinear);
  CHECK(b.input_bounds().max[3] == 12);
  CHECK(b.read_verified("fp32").size() == onnx.size());
  b.verify_all();

  auto refuse = [&](json bad, const std::string& expect) {
    save(dir, bad);
    std::string e = error_of([&] { edgeseg::Bundle::open(dir.string()); });
    if (!has(e, expect)) std::fprintf(stderr, "expected '%s' in: %s\n", expect.c_str(), e.c_str());
    CHECK(has(e, expect));
    CHECK(e.find('\n') == std::string::npos);
    write_file(dir / "model.onnx", onnx);
    save(dir, m);
  };
  json newer = m;
  newer["version"] = 2;
  refuse(newer, "upgrade the edgeseg native runtime");
  json foreign = m;
  foreign["format"] = "other";
  refuse(foreign, "not an edgeseg bundle manifest");
  json dotdot = m;
  dotdot["roles"]["fp32"] = "../model.onnx";
  refuse(dotdot, "expected a plain relative file name");
  json absolute = m;
  absolute["files"]["/etc/passwd"] = {{"sha256", std::string(64, 'a')}};
  refuse(absolute, "expected a plain relative file name");
  json unlisted = m;
  unlisted["roles"]["int8"] = "model.int8.onnx";
  refuse(unlisted, "not listed with a sha256");
  json resize = m;
  resize["preprocessing"]["resize"] = "lanczos";
  refuse(resize, "upgrade the edgeseg native runtime");

  // the manifest's meaning is held against the hashed ONNX's metadata (issue 21)
  json mean = m;
  mean["preprocessing"]["mean"] = {0.4, 0.5, 0.5};
  refuse(mean, "'preprocessing.mean' is [0.4,0.5,0.5] but model.onnx records [0.5,0.5,0.5]");
  json order = m;
  order["preprocessing"]["channel_order"] = "BGR";
  refuse(order, "'preprocessing.channel_order' is \"BGR\"");
  json classes = m;
  classes["classes"] = {"b", "a"};
  refuse(classes, "'classes' is [\"b\",\"a\"] but model.onnx records [\"a\",\"b\"]");
  json palette = m;
  palette["palette"][1] = {0, 255, 0};
  refuse(palette, "'palette' is");
  json precision = m;
  precision["precision"] = "int8";
  refuse(precision, "'roles.int8' must be its file in a int8 bundle");
  json renamed = m;
  renamed["roles"]["fp32"] = "model.int8.onnx";
  renamed["files"]["model.int8.onnx"] = renamed["files"]["model.onnx"];
  fs::copy_file(dir / "model.onnx", dir / "model.int8.onnx", fs::copy_options::overwrite_existing);
  refuse(renamed, "'roles.fp32' must be 'model.onnx'");
  json nested = m;
  json deep = 1;
  for (int i = 0; i < 40; ++i) deep = json::array({deep});
  nested["build"] = deep;
  refuse(nested, "deeper than 32 levels");
  json newline = m;
  newline["classes"] = {"a", "b\nc"};
  refuse(newline, "class names must be one printable line");

  // a legacy bundle (no resize field) is read as pil_bilinear when its ONNX says so too
  json legacy_manifest = base_manifest();
  legacy_manifest["preprocessing"].erase("resize");
  json legacy = with_model(dir, legacy_manifest, fake_onnx(legacy_manifest, 2));
  save(dir, legacy);
  CHECK(edgeseg::Bundle::open(dir.string()).preprocessing().resize == edgeseg::ResizeMode::PilBilinear);
  // the class count must equal the model's output channels
  save(dir, with_model(dir, base_manifest(), fake_onnx(base_manifest(), 3)));
  CHECK(has(error_of([&] { edgeseg::Bundle::open(dir.string()); }), "names 2 classes but model.onnx outputs 3 channels"));
  // a role's file must carry its role's precision
  save(dir, with_model(dir, base_manifest(), fake_onnx(base_manifest(), 2, {{"precision", "int8"}})));
  CHECK(has(error_of([&] { edgeseg::Bundle::open(dir.string()); }), "'the role fp32's precision' is null"));
  write_file(dir / "model.onnx", onnx);
  save(dir, m);

  // a symlink leading out of the bundle
  write_file(root / "outside.onnx", onnx);
  fs::rename(dir / "model.onnx", dir / "model.real");
  fs::create_symlink(root / "outside.onnx", dir / "model.onnx");
  CHECK(has(error_of([&] { edgeseg::Bundle::open(dir.string()); }), "outside the bundle folder"));
  fs::remove(dir / "model.onnx");
  fs::rename(dir / "model.real", dir / "model.onnx");

  // changed and missing files: refused when read, with the rebuild command (an ONNX is read when opened)
  auto b2 = edgeseg::Bundle::open(dir.string());
  write_file(dir / "model.onnx", "tampered bytes!");
  std::string e = error_of([&] { b2.read_verified("fp32"); });
  CHECK(has(e, "model.onnx changed (sha256 differs") && has(e, "edgeseg build"));
  CHECK(has(error_of([&] { b2.verify_all(); }), "changed"));
  CHECK(has(error_of([&] { edgeseg::Bundle::open(dir.string()); }), "model.onnx changed (sha256 differs"));
  fs::remove(dir / "model.onnx");
  CHECK(has(error_of([&] { b2.read_verified("fp32"); }), "model.onnx is missing"));
  CHECK(has(error_of([&] { edgeseg::Bundle::open((root / "nothing").string()); }), "is not an edgeseg bundle"));
  std::ofstream(dir / "manifest.json") << "{ not json";
  CHECK(has(error_of([&] { edgeseg::Bundle::open(dir.string()); }), "not valid JSON"));
  std::ofstream(dir / "manifest.json") << "{\"format\": \"edgeseg.bundle\", \"model\": \"\xff\xfe\"}";
  CHECK(has(error_of([&] { edgeseg::Bundle::open(dir.string()); }), "not valid JSON"));  // invalid UTF-8
}

static void test_sha256() {
  const char* abc = "abc";
  CHECK(edgeseg::sha256_hex(reinterpret_cast<const uint8_t*>(abc), 3) ==
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");  // FIPS 180-2 example
}

static void test_engine_rules() {
  edgeseg::EngineRecord built{"10.3.0", "8.7", "Orin", false, "none", {}};
  CHECK(edgeseg::engine_problems(built, {"10.3.0", "8.7", "Orin"}).empty());
  auto p = edgeseg::engine_problems(built, {"10.4.0", "8.7", "Orin"});
  CHECK(p.size() == 1 && has(p[0], "not version-compatible"));
  CHECK(edgeseg::engine_problems(built, {"10.3.0", "8.6", "Orin"}).size() == 1);
  CHECK(has(edgeseg::engine_problems(built, {"10.3.0", "8.7", "Thor"})[0], "not hardware-compatible"));
  built.version_compatible = true;
  CHECK(edgeseg::engine_problems(built, {"10.4.0", "8.7", "Orin"}).empty());
  CHECK(edgeseg::engine_problems(built, {"11.1.0", "8.7", "Orin"}).empty());   // 10 -> 11
  CHECK(edgeseg::engine_problems(built, {"10.2.0", "8.7", "Orin"}).size() == 1);  // older runtime
  built.hardware_compatible = "ampere_plus";
  CHECK(edgeseg::engine_problems(built, {"10.3.0", "9.0", "H200"}).empty());
  CHECK(edgeseg::engine_problems(built, {"10.3.0", "7.5", "T4"}).size() == 1);
}

// ---------------------------------------------------------------- pre/post-processing
static void test_resize() {
  std::mt19937 rng(1);
  std::vector<uint8_t> src(5 * 7 * 3), dst(5 * 7 * 3);
  for (auto& v : src) v = static_cast<uint8_t>(rng());
  edgeseg::resize_bilinear_u8(src.data(), 5, 7, 21, 3, dst.data(), 5, 7, 21);
  CHECK(src == dst);  // same size: identity
  std::vector<uint8_t> flat(4 * 6, 77), up(9 * 13);
  edgeseg::resize_bilinear_u8(flat.data(), 4, 6, 6, 1, up.data(), 9, 13, 13);
  CHECK(std::all_of(up.begin(), up.end(), [](uint8_t v) { return v == 77; }));
  // 2x downscale with half-pixel centres averages each 2x2 block: (10 + 20 + 30 + 40) / 4 = 25
  uint8_t block[4] = {10, 20, 30, 40}, one = 0;
  edgeseg::resize_bilinear_u8(block, 2, 2, 2, 1, &one, 1, 1, 1);
  CHECK(one == 25);
  // ties round half up (edgeseg.data.resize.bilinear): (1 + 2) / 2 = 1.5 -> 2, (2 + 3) / 2 = 2.5 -> 3
  uint8_t row[4] = {1, 2, 2, 3}, half[2];
  edgeseg::resize_bilinear_u8(row, 1, 4, 4, 1, half, 1, 2, 2);
  CHECK(half[0] == 2 && half[1] == 3);
}

static void test_labels() {
  // ties: the first maximum wins (numpy argmax)
  float logits[3 * 1 * 2] = {1, 5, 1, 5, 0, 5};
  uint8_t lab[2];
  edgeseg::labels_from_logits(logits, 3, 1, 2, 1, 2, lab);
  CHECK(lab[0] == 0 && lab[1] == 0);
  float nan_first[2] = {1, NAN};
  edgeseg::labels_from_logits(nan_first, 2, 1, 1, 1, 1, lab);
  CHECK(lab[0] == 1);
  // upsampled class maps keep the class of each half
  float split[2 * 2 * 2] = {1, 0, 1, 0, 0, 1, 0, 1};
  std::vector<uint8_t> big(4 * 8);
  edgeseg::labels_from_logits(split, 2, 2, 2, 4, 8, big.data());
  CHECK(big[0] == 0 && big[7] == 1 && big[3] == 0 && big[4] == 1);
  CHECK(has(error_of([&] { edgeseg::labels_from_logits(split, 300, 2, 2, 4, 8, big.data()); }), "256 classes"));
}

static void test_color() {
  uint8_t bgr[3] = {1, 2, 3}, rgb[3];
  edgeseg::frame_to_rgb({bgr, 1, 1, edgeseg::PixelFormat::BGR, 3, 0, nullptr}, rgb);
  CHECK(rgb[0] == 3 && rgb[2] == 1);
  // NV12 grey (U = V = 128): R = G = B = (Y - 16) * 255 / 219, rounded
  uint8_t nv12[2 * 2 + 2] = {16, 235, 126, 126, 128, 128}, out[12];
  edgeseg::frame_to_rgb({nv12, 2, 2, edgeseg::PixelFormat::NV12, 3, 0, nullptr}, out);
  CHECK(out[0] == 0 && out[3] == 255 && out[6] == 128 && out[7] == 128 && out[8] == 128);
  edgeseg::Preprocessing p;
  p.mean = {0.5f, 0.25f, 0.0f};
  p.std = {0.5f, 0.5f, 0.5f};
  p.network_bgr = true;
  uint8_t px[3] = {255, 0, 51};
  float chw[3];
  edgeseg::normalize_rgb(px, 1, 1, p, chw);
  CHECK(std::fabs(chw[0] - (0.2f - 0.5f) / 0.5f) < 1e-6f);  // network channel 0 = B
  CHECK(std::fabs(chw[2] - 2.0f) < 1e-6f);                  // R = 1.0 -> (1 - 0) / 0.5
  // overlay: (1 - a) * frame + a * colour, rounded
  uint8_t lab = 1, blended[3];
  edgeseg::overlay_rgb(px, &lab, 1, 1, {{0, 0, 0}, {0, 100, 255}}, 0.5f, blended);
  CHECK(blended[0] == 128 && blended[1] == 50 && blended[2] == 153);
}

static void test_legacy_resize_refused() {
  edgeseg::Preprocessing p;  // PilBilinear by default
  std::vector<uint8_t> frame(4 * 4 * 3, 1), scratch;
  std::vector<float> chw(3 * 2 * 2);
  std::string e = error_of([&] {
    edgeseg::preprocess({frame.data(), 4, 4, edgeseg::PixelFormat::RGB, 3, 0, nullptr}, p, 2, 2, chw.data(), scratch);
  });
  CHECK(has(e, "rebuild the bundle with a current edgeseg"));
  std::vector<float> same(3 * 4 * 4);  // no resize needed: works
  CHECK(error_of([&] {
          edgeseg::preprocess({frame.data(), 4, 4, edgeseg::PixelFormat::RGB, 3, 0, nullptr}, p, 4, 4, same.data(),
                              scratch);
        }).empty());
}

static void test_c_api(const fs::path& root) {
  edgeseg_segmenter* seg = reinterpret_cast<edgeseg_segmenter*>(1);
  CHECK(edgeseg_open((root / "nothing").c_str(), "auto", 0, &seg) != 0);
  CHECK(seg == nullptr);
  CHECK(has(edgeseg_last_error(), "is not an edgeseg bundle"));
  uint8_t px[3] = {0, 0, 0}, out[3];
  CHECK(edgeseg_frame_to_rgb(px, 1, 1, 0, 7, out) != 0 && has(edgeseg_last_error(), "pixel format"));
  CHECK(edgeseg_frame_to_rgb(px, 1, 1, 0, EDGESEG_RGB, out) == 0 && edgeseg_last_error()[0] == 0);
}

int main() {
  fs::path root = scratch_root();
  test_sha256();
  test_bundles(root);
  test_engine_rules();
  test_resize();
  test_labels();
  test_color();
  test_legacy_resize_refused();
  test_c_api(root);
  fs::remove_all(root);
  std::printf("%d checks, %d failed\n", checks, failures);
  return failures ? 1 : 0;
}
