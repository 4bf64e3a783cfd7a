// Private: compiles stb_image (JPEG + PNG decoders only) and stb_image_write into every translation unit
// that includes arclight's image I/O, with internal linkage (STB_IMAGE_STATIC / STB_IMAGE_WRITE_STATIC).
// We never link Debian's libstb.so: it carries every stb decoder (GIF, BMP, PSD, PIC, PNM, HDR, TGA), and
// stb_image 2.27 has known bugs in several of them. Only arclight/data/image_io.hpp may include this
// file, so the pixel and side caps checked there always run before a decoder allocates anything.
#pragma once
#pragma GCC system_header  // third-party code: keep its warnings out of our -Wall builds

#if defined(STBI_INCLUDE_STB_IMAGE_H) || defined(INCLUDE_STB_IMAGE_WRITE_H)
#error "stb_image/stb_image_write were included before arclight/data/image_io.hpp; decode only through arclight::data"
#endif

#define STBI_NO_STDIO          // we read files ourselves (bounded, with path-bearing errors)
#define STBI_ONLY_JPEG
#define STBI_ONLY_PNG
#define STBI_MAX_DIMENSIONS (1 << 16)  // hard ceiling; the runtime side cap in DecodeOptions is tighter
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb/stb_image.h>
#undef STB_IMAGE_IMPLEMENTATION

#define STBI_WRITE_NO_STDIO
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#undef STB_IMAGE_WRITE_IMPLEMENTATION
