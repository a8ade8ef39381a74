// PNG files for the sample program (libpng): decode to packed RGB like PIL's convert("RGB"),
// write 8-bit grey / RGB files atomically (a hidden temporary renamed into place).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace edgeseg {

struct Image {
  int width = 0, height = 0;
  std::vector<uint8_t> rgb;  // height * width * 3
};

Image read_png_rgb(const std::string& path);                     // throws edgeseg::Error
void write_png(const std::string& path, const uint8_t* pixels, int width, int height, int channels);  // 1 or 3

}  // namespace edgeseg
