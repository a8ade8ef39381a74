// edgeseg-native BUNDLE INPUT... --out DIR: the native counterpart of `edgeseg infer` on images.
// Writes DIR/labels/NAME.png (8-bit class index per pixel, frame size), DIR/masks/NAME.png (palette
// colours) and DIR/overlays/NAME.png (frame blended with the palette, no legend), each file complete
// or absent; prints per-stage timing and FPS. A file that fails to decode is skipped and counted.
// Exit codes: 0 done, 2 user error (one line on stderr).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <type_traits>
#include <vector>

#include "edgeseg/runtime.hpp"
#include "image_io.hpp"

namespace fs = std::filesystem;

namespace {

const char* kUsage =
    "usage: edgeseg-native BUNDLE INPUT... --out DIR [--backend auto|openvino|tensorrt] [--threads N]\n"
    "                      [--alpha A] [--no-overlays] [--timings FILE.json] [--repeat N]\n"
    "INPUT: PNG files or folders of them. Writes DIR/labels/NAME.png, DIR/masks/NAME.png, DIR/overlays/NAME.png.\n";

struct Args {
  std::string bundle, out, timings;
  std::vector<std::string> inputs;
  edgeseg::Options options;
  float alpha = 0.5f;
  bool overlays = true;
  int repeat = 1;
};

std::string lower(std::string s) {
  std::transform(s.begin(), s.end(), s.begin(), [](unsigned char c) { return std::tolower(c); });
  return s;
}

// `v` as a whole number of type T (int or float), or an Error naming the flag.
template <typename T>
T number(const std::string& flag, const std::string& v) {
  try {
    std::size_t n = 0;
    T x = std::is_integral<T>::value ? static_cast<T>(std::stoi(v, &n)) : static_cast<T>(std::stof(v, &n));
    if (n == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw edgeseg::Error(flag + " expects " + (std::is_integral<T>::value ? "an integer" : "a number") + ", got '" +
                       v + "'");
}

Args parse(int argc, char** argv) {
  Args a;
  std::vector<std::string> pos;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw edgeseg::Error(s + " needs a value\n" + kUsage);
      return argv[++i];
    };
    if (s == "--out") a.out = value();
    else if (s == "--backend") a.options.backend = value();
    else if (s == "--threads") a.options.threads = number<int>(s, value());
    else if (s == "--alpha") a.alpha = number<float>(s, value());
    else if (s == "--no-overlays") a.overlays = false;
    else if (s == "--timings") a.timings = value();
    else if (s == "--repeat") a.repeat = std::max(1, number<int>(s, value()));
    else if (s == "-h" || s == "--help") {
      std::fputs(kUsage, stdout);
      std::exit(0);
    } else if (s.rfind("--", 0) == 0) throw edgeseg::Error("unknown option " + s + "\n" + kUsage);
    else pos.push_back(s);
  }
  if (pos.size() < 2 || a.out.empty())
    throw edgeseg::Error("expected a bundle, at least one input and --out DIR\n" + std::string(kUsage));
  a.bundle = pos[0];
  a.inputs.assign(pos.begin() + 1, pos.end());
  return a;
}

// Files in order (folders: their images sorted by name); output names as `edgeseg infer` makes them:
// the stem, or STEM_EXT when two inputs share a stem.
std::vector<std::pair<fs::path, std::string>> collect(const std::vector<std::string>& inputs) {
  static const std::vector<std::string> suffixes = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp",
                                                    ".ppm", ".pgm"};
  std::vector<fs::path> files;
  for (const auto& in : inputs) {
    fs::path p(in);
    if (fs::is_directory(p)) {
      std::vector<fs::path> found;
      for (const auto& e : fs::directory_iterator(p))
        if (e.is_regular_file() &&
            std::find(suffixes.begin(), suffixes.end(), lower(e.path().extension().string())) != suffixes.end())
          found.push_back(e.path());
      std::sort(found.begin(), found.end());
      if (found.empty()) throw edgeseg::Error("folder " + in + " holds no image files; expected PNG images");
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(p)) {
      files.push_back(p);
    } else {
      throw edgeseg::Error("input " + in + " does not exist; expected an image file or a folder of images");
    }
  }
  std::map<std::string, int> stems;
  for (const auto& f : files) ++stems[f.stem().string()];
  std::vector<std::pair<fs::path, std::string>> out;
  for (const auto& f : files) {
    std::string stem = f.stem().string(), ext = f.extension().string();
    out.emplace_back(f, stems[stem] > 1 && !ext.empty() ? stem + "_" + ext.substr(1) : stem);
  }
  return out;
}

double ms(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

struct Row {
  std::string name;
  double decode, pre, infer, post, encode;
};

int run(const Args& a) {
  const auto files = collect(a.inputs);
  edgeseg::Segmenter seg(a.bundle, a.options);
  for (const char* sub : {"labels", "masks", "overlays"}) {
    if (!a.overlays && std::strcmp(sub, "labels") != 0) continue;
    std::error_code ec;
    fs::create_directories(fs::path(a.out) / sub, ec);
    if (ec) throw edgeseg::Error("cannot create " + (fs::path(a.out) / sub).string() + " (" + ec.message() + ")");
  }
  std::vector<Row> rows;
  int failed = 0;
  std::vector<uint8_t> labels, colours, blend;
  const auto start = std::chrono::steady_clock::now();
  for (int r = 0; r < a.repeat; ++r) {
    for (const auto& [path, name] : files) {
      Row row{name, 0, 0, 0, 0, 0};
      auto t0 = std::chrono::steady_clock::now();
      edgeseg::Image img;
      try {
        img = edgeseg::read_png_rgb(path.string());
      } catch (const edgeseg::Error& e) {
        std::fprintf(stderr, "skipped %s\n", e.what());
        ++failed;
        continue;
      }
      row.decode = ms(t0);
      labels.resize(static_cast<std::size_t>(img.width) * img.height);
      seg.segment(edgeseg::Frame{img.rgb.data(), img.width, img.height, edgeseg::PixelFormat::RGB, 3, 0, nullptr},
                  labels.data());
      const auto& t = seg.last_timing();
      row.pre = t.preprocess_ms;
      row.infer = t.infer_ms;
      row.post = t.postprocess_ms;
      t0 = std::chrono::steady_clock::now();
      const fs::path out(a.out);
      edgeseg::write_png((out / "labels" / (name + ".png")).string(), labels.data(), img.width, img.height, 1);
      if (a.overlays) {
        const auto& pal = seg.bundle().palette();
        colours.resize(img.rgb.size());
        blend.resize(img.rgb.size());
        for (std::size_t i = 0; i < labels.size(); ++i)
          for (int c = 0; c < 3; ++c) colours[3 * i + c] = labels[i] < pal.size() ? pal[labels[i]][c] : 0;
        edgeseg::overlay_rgb(img.rgb.data(), labels.data(), img.height, img.width, pal, a.alpha, blend.data());
        edgeseg::write_png((out / "masks" / (name + ".png")).string(), colours.data(), img.width, img.height, 3);
        edgeseg::write_png((out / "overlays" / (name + ".png")).string(), blend.data(), img.width, img.height, 3);
      }
      row.encode = ms(t0);
      rows.push_back(row);
    }
  }
  const double wall = ms(start);
  if (rows.empty()) throw edgeseg::Error("no input could be decoded (" + std::to_string(failed) + " failed)");
  double sum[5] = {0, 0, 0, 0, 0};
  for (const auto& r : rows) {
    sum[0] += r.decode, sum[1] += r.pre, sum[2] += r.infer, sum[3] += r.post, sum[4] += r.encode;
  }
  const double n = static_cast<double>(rows.size());
  std::printf("%zu frames, backend %s%s: decode %.2f ms, preprocess %.2f ms, infer %.2f ms, postprocess %.2f ms, "
              "encode %.2f ms per frame; %.1f FPS end-to-end, %.1f FPS model-only\n",
              rows.size(), seg.backend().c_str(),
              failed ? (", " + std::to_string(failed) + " skipped").c_str() : "", sum[0] / n, sum[1] / n,
              sum[2] / n, sum[3] / n, sum[4] / n, 1000.0 * n / wall, 1000.0 * n / sum[2]);
  if (!a.timings.empty()) {
    nlohmann::json js = {{"backend", seg.backend()}, {"wall_ms", wall}, {"frames", nlohmann::json::array()}};
    for (const auto& r : rows)
      js["frames"].push_back({{"name", r.name}, {"decode_ms", r.decode}, {"preprocess_ms", r.pre},
                              {"infer_ms", r.infer}, {"postprocess_ms", r.post}, {"encode_ms", r.encode}});
    std::ofstream out(a.timings);
    out << js.dump(1) << "\n";
    if (!out) throw edgeseg::Error("cannot write " + a.timings);
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    return run(parse(argc, argv));
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 2;
  }
}
