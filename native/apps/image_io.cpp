#include "image_io.hpp"

#include <png.h>
#include <unistd.h>

#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "edgeseg/runtime.hpp"

namespace edgeseg {

namespace {
struct File {
  FILE* f;
  ~File() {
    if (f) std::fclose(f);
  }
};
// libpng reports errors by longjmp; the message is kept for the Error thrown after the jump.
struct PngErr {
  std::string msg;
};
void png_fail(png_structp png, png_const_charp msg) {
  static_cast<PngErr*>(png_get_error_ptr(png))->msg = msg ? msg : "libpng error";
  png_longjmp(png, 1);
}
void png_warn(png_structp, png_const_charp) {}
}  // namespace

Image read_png_rgb(const std::string& path) {
  File file{std::fopen(path.c_str(), "rb")};
  if (!file.f) throw Error("cannot open " + path + "; check the path");
  unsigned char sig[8];
  if (std::fread(sig, 1, 8, file.f) != 8 || png_sig_cmp(sig, 0, 8))
    throw Error(path + " is not a PNG file; this build of edgeseg-native decodes PNG images only");
  PngErr err;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &err, png_fail, png_warn);
  png_infop info = png_create_info_struct(png);
  Image img;
  std::vector<png_bytep> rows;  // declared before setjmp: nothing with a destructor is skipped by the jump
  bool layout_ok = true;
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw Error(path + ": " + err.msg + "; expected a readable PNG image");
  }
  {
    png_init_io(png, file.f);
    png_set_sig_bytes(png, 8);
    png_read_info(png, info);
    const int type = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (depth == 16) png_set_strip_16(png);
    if (type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (type == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    if (type == PNG_COLOR_TYPE_GRAY || type == PNG_COLOR_TYPE_GRAY_ALPHA) png_set_gray_to_rgb(png);
    if (type & PNG_COLOR_MASK_ALPHA) png_set_strip_alpha(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS)) png_set_tRNS_to_alpha(png), png_set_strip_alpha(png);
    png_read_update_info(png, info);
    img.width = static_cast<int>(png_get_image_width(png, info));
    img.height = static_cast<int>(png_get_image_height(png, info));
    layout_ok = png_get_rowbytes(png, info) == static_cast<size_t>(img.width) * 3;
    if (!layout_ok) img.height = 0;
    img.rgb.resize(static_cast<size_t>(img.width) * img.height * 3);
    rows.resize(img.height);
    for (int y = 0; y < img.height; ++y) rows[y] = img.rgb.data() + static_cast<size_t>(y) * img.width * 3;
    if (layout_ok) {
      png_read_image(png, rows.data());
      png_read_end(png, nullptr);
    }
  }
  png_destroy_read_struct(&png, &info, nullptr);
  if (!layout_ok) throw Error(path + ": unexpected PNG row layout after conversion to RGB");
  return img;
}

void write_png(const std::string& path, const uint8_t* pixels, int width, int height, int channels) {
  namespace fs = std::filesystem;
  fs::path target(path);
  fs::path tmp = target.parent_path() / ("." + target.filename().string() + ".tmp" + std::to_string(getpid()));
  {
    File file{std::fopen(tmp.c_str(), "wb")};
    if (!file.f) throw Error("cannot write " + tmp.string() + "; check that the output folder is writable");
    PngErr err;
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_fail, png_warn);
    png_infop info = png_create_info_struct(png);
    if (setjmp(png_jmpbuf(png))) {
      png_destroy_write_struct(&png, &info);
      std::fclose(file.f);
      file.f = nullptr;
      fs::remove(tmp);
      throw Error("cannot write " + path + " (" + err.msg + ")");
    }
    {
      png_init_io(png, file.f);
      png_set_compression_level(png, 1);
      png_set_IHDR(png, info, width, height, 8, channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB,
                   PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
      png_write_info(png, info);
      for (int y = 0; y < height; ++y)
        png_write_row(png, const_cast<png_bytep>(pixels + static_cast<size_t>(y) * width * channels));
      png_write_end(png, nullptr);
    }
    png_destroy_write_struct(&png, &info);
    if (std::fclose(file.f) != 0) {
      file.f = nullptr;
      fs::remove(tmp);
      throw Error("cannot write " + path + " (disk full?)");
    }
    file.f = nullptr;
  }
  std::error_code ec;
  fs::rename(tmp, target, ec);
  if (ec) {
    fs::remove(tmp);
    throw Error("cannot move " + tmp.string() + " to " + path + " (" + ec.message() + ")");
  }
}

}  // namespace edgeseg
