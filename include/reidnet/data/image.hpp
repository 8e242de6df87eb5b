#pragma once
/// Reading and writing pictures as uint8 [H, W, 3] RGB tensors, with the pixels PIL gives.
///
///     torch::Tensor image = reidnet::read_image("0002_c1s1_000451_03.jpg");  // [128, 64, 3]
///
/// JPEG goes through libjpeg-turbo (the decoder PIL uses, with the same default settings:
/// accurate integer DCT and fancy upsampling), PNG through libpng with PIL's `convert('RGB')`
/// rules: grey is replicated, alpha is dropped (not composited), palettes are looked up.
/// Needs the CMake target reidnet::data.
///
/// A few bytes of file can claim a huge picture (a decompression bomb), so read_image checks
/// the size in the header before it allocates anything: past max_image_pixels() (PIL's
/// Image.MAX_IMAGE_PIXELS, 89,478,485) it throws. Raise or lift the limit for trusted files:
///
///     reidnet::set_max_image_pixels(200'000'000);  // or 0: no limit

#include <reidnet/core/detail/file_io.hpp>
#include <reidnet/core/errors.hpp>

#include <dlfcn.h>
#include <png.h>
#include <torch/torch.h>
#include <turbojpeg.h>

#include <algorithm>
#include <atomic>
#include <csetjmp>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace reidnet {

/// PIL's Image.MAX_IMAGE_PIXELS: (1024 * 1024 * 1024 // 4 // 3) pixels, a 256 MiB RGB picture.
/// PIL warns past it and refuses past twice it; reidnet refuses past it.
inline constexpr int64_t kDefaultMaxImagePixels = 89'478'485;

namespace detail {

inline std::atomic<int64_t>& max_image_pixels_setting() {
  static std::atomic<int64_t> limit{kDefaultMaxImagePixels};
  return limit;
}

}  // namespace detail

/// The most pixels (width x height) read_image accepts; 0 or less = no limit.
inline int64_t max_image_pixels() { return detail::max_image_pixels_setting().load(); }

/// Sets the limit of max_image_pixels() for the whole process, like assigning PIL's module
/// global (0 or less lifts it, as None does there); safe to call while other threads read.
inline void set_max_image_pixels(int64_t limit) { detail::max_image_pixels_setting().store(limit); }

namespace detail {

/// Empty if a `width` x `height` picture may be decoded, else why not: checked on the header
/// before any pixel memory is allocated.
inline std::string image_size_problem(int64_t width, int64_t height, const std::string& name) {
  if (width <= 0 || height <= 0) {
    return "image " + name + " claims an empty size of " + std::to_string(width) + "x" +
           std::to_string(height) + " pixels";
  }
  const int64_t limit = max_image_pixels();
  if (limit > 0 && width * height > limit) {
    return "image " + name + " claims " + std::to_string(width) + "x" + std::to_string(height) +
           " = " + std::to_string(width * height) + " pixels, more than the limit of " +
           std::to_string(limit) + " (a decompression bomb?); for a trusted file raise the " +
           "limit with reidnet::set_max_image_pixels(), or lift it with 0";
  }
  return {};
}

inline bool is_jpeg(const std::vector<unsigned char>& bytes) {
  return bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF;
}

inline bool is_png(const std::vector<unsigned char>& bytes) {
  return bytes.size() >= 8 && png_sig_cmp(bytes.data(), 0, 8) == 0;
}

/// Why calls to `function` (named `name`) would not reach `library` (a file-name fragment),
/// or "" when they do. The dynamic linker binds each symbol to the first loaded object that
/// defines it, so an earlier library holding its own copy of libjpeg or libpng (as Python
/// wheels bundle them) silently takes our calls, and a struct or version mismatch then crashes
/// far from the cause.
inline std::string image_library_problem(const void* function, const char* name,
                                         const char* library) {
  Dl_info answering{}, calling{};
  if (dladdr(function, &answering) == 0 || answering.dli_fname == nullptr) return "";
  // Linked in statically (or through a non-PIE executable's PLT): bound at link time.
  if (dladdr(reinterpret_cast<const void*>(&image_library_problem), &calling) != 0 &&
      answering.dli_fbase == calling.dli_fbase) {
    return "";
  }
  const std::string file = answering.dli_fname;
  if (file.find(library, file.find_last_of('/') + 1) != std::string::npos) return "";
  return std::string(name) + " is answered by " + file + ", not by " + library +
         ": another copy of the image library, loaded earlier, took its symbols; link " +
         library + " before that library (or preload it) so that reidnet reaches its own";
}

/// Checks once per process that libjpeg-turbo's and libpng's entry points reach those
/// libraries; throws std::runtime_error (at every call) naming each one that does not.
inline void check_image_libraries() {
  static const std::string problem = [] {
    const std::pair<const void*, const char*> jpeg[] = {
        {reinterpret_cast<const void*>(&tjInitDecompress), "tjInitDecompress"},
        {reinterpret_cast<const void*>(&tjInitCompress), "tjInitCompress"}};
    const std::pair<const void*, const char*> png[] = {
        {reinterpret_cast<const void*>(&png_create_read_struct), "png_create_read_struct"},
        {reinterpret_cast<const void*>(&png_image_write_to_memory), "png_image_write_to_memory"}};
    std::string problems;
    const auto check = [&](const void* function, const char* name, const char* library) {
      const auto found = image_library_problem(function, name, library);
      if (!found.empty()) problems += (problems.empty() ? "" : "; ") + found;
    };
    for (const auto& [function, name] : jpeg) check(function, name, "libturbojpeg");
    for (const auto& [function, name] : png) check(function, name, "libpng");
    return problems;
  }();
  if (!problem.empty()) throw std::runtime_error(problem);
}

/// Owns a turbojpeg handle.
struct TurboJpegHandle {
  tjhandle handle;
  explicit TurboJpegHandle(bool compress)
      : handle((check_image_libraries(), compress ? tjInitCompress() : tjInitDecompress())) {
    if (handle == nullptr) throw std::runtime_error("cannot initialise libjpeg-turbo");
  }
  ~TurboJpegHandle() { tjDestroy(handle); }
  TurboJpegHandle(const TurboJpegHandle&) = delete;
  TurboJpegHandle& operator=(const TurboJpegHandle&) = delete;
};

inline torch::Tensor decode_jpeg(const std::vector<unsigned char>& bytes, const std::string& name) {
  TurboJpegHandle decoder(false);
  int width = 0, height = 0, subsampling = 0, colorspace = 0;
  if (tjDecompressHeader3(decoder.handle, bytes.data(), static_cast<unsigned long>(bytes.size()),
                          &width, &height, &subsampling, &colorspace) != 0) {
    throw InputError("corrupt JPEG " + name + ": " + tjGetErrorStr2(decoder.handle));
  }
  if (colorspace == TJCS_CMYK || colorspace == TJCS_YCCK) {
    throw InputError("CMYK JPEG " + name + " is not supported: convert it to RGB");
  }
  if (const auto problem = image_size_problem(width, height, name); !problem.empty()) {
    throw InputError(problem);
  }
#ifdef TJFLAG_LIMITSCANS
  // A progressive file of a few KB can hold thousands of scans, each decoded over the whole
  // picture: refuse more than libjpeg-turbo's 500.
  const int flags = TJFLAG_LIMITSCANS;
#else
  const int flags = 0;
#endif
  auto image = torch::empty({height, width, 3}, torch::kUInt8);
  const int status = tjDecompress2(decoder.handle, bytes.data(),
                                   static_cast<unsigned long>(bytes.size()),
                                   image.data_ptr<uint8_t>(), width, 0, height, TJPF_RGB, flags);
  if (status != 0) {
    const std::string message = tjGetErrorStr2(decoder.handle);
    // libjpeg reports most damage as warnings and goes on; like PIL, refuse a file whose data
    // ends early, but accept the harmless warnings (e.g. extraneous bytes before a marker).
    const bool harmless = tjGetErrorCode(decoder.handle) == TJERR_WARNING &&
                          message.find("Premature end") == std::string::npos;
    if (!harmless) throw InputError("corrupt or truncated JPEG " + name + ": " + message);
  }
  return image;
}

/// libpng reports errors by longjmp; the message is kept here for the exception.
struct PngReadState {
  const std::vector<unsigned char>* bytes = nullptr;
  size_t offset = 0;
  std::string error;
  torch::Tensor image;
  std::vector<png_bytep> rows;
  std::vector<png_byte> wide_grey;  // 16-bit grey samples, big-endian
};

inline void png_read_from_memory(png_structp png, png_bytep out, png_size_t count) {
  auto* state = static_cast<PngReadState*>(png_get_io_ptr(png));
  if (state->offset + count > state->bytes->size()) png_error(png, "file is truncated");
  std::memcpy(out, state->bytes->data() + state->offset, count);
  state->offset += count;
}

inline void png_record_error(png_structp png, png_const_charp message) {
  static_cast<PngReadState*>(png_get_error_ptr(png))->error = message;
  png_longjmp(png, 1);
}

inline void png_ignore_warning(png_structp, png_const_charp) {}

inline torch::Tensor decode_png(const std::vector<unsigned char>& bytes, const std::string& name) {
  // Everything a longjmp may cross lives on the heap behind pointers set before setjmp.
  check_image_libraries();
  const auto state = std::make_unique<PngReadState>();
  state->bytes = &bytes;
  png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, state.get(), png_record_error,
                                           png_ignore_warning);
  png_infop info = png ? png_create_info_struct(png) : nullptr;
  if (png == nullptr || info == nullptr) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw std::runtime_error("cannot initialise libpng to read " + name);
  }
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw InputError("corrupt or truncated PNG " + name + ": " + state->error);
  }
  png_set_read_fn(png, state.get(), png_read_from_memory);
  png_read_info(png, info);
  const png_uint_32 width = png_get_image_width(png, info);
  const png_uint_32 height = png_get_image_height(png, info);
  const int color_type = png_get_color_type(png, info);
  const int bit_depth = png_get_bit_depth(png, info);
  if (const auto problem = image_size_problem(width, height, name); !problem.empty()) {
    png_destroy_read_struct(&png, &info, nullptr);
    throw InputError(problem);
  }
  state->image = torch::empty({static_cast<int64_t>(height), static_cast<int64_t>(width), 3},
                              torch::kUInt8);
  uint8_t* const pixels = state->image.data_ptr<uint8_t>();
  state->rows.resize(height);
  png_set_interlace_handling(png);
  if (color_type == PNG_COLOR_TYPE_GRAY && bit_depth == 16) {
    // PIL opens 16-bit grey as mode "I", whose convert('RGB') clips each value to 0..255.
    state->wide_grey.resize(static_cast<size_t>(height) * width * 2);
    for (png_uint_32 y = 0; y < height; ++y) {
      state->rows[y] = state->wide_grey.data() + static_cast<size_t>(y) * width * 2;
    }
    png_read_update_info(png, info);
    png_read_image(png, state->rows.data());
    for (size_t i = 0; i < static_cast<size_t>(height) * width; ++i) {
      const int value = (state->wide_grey[2 * i] << 8) | state->wide_grey[2 * i + 1];
      std::fill_n(pixels + 3 * i, 3, static_cast<uint8_t>(std::min(value, 255)));
    }
  } else {
    // PIL's convert('RGB'): 16-bit samples keep their high byte, palettes are looked up,
    // grey is replicated, alpha and transparency (tRNS) are dropped.
    png_set_strip_16(png);
    if (color_type == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (color_type == PNG_COLOR_TYPE_GRAY || color_type == PNG_COLOR_TYPE_GRAY_ALPHA) {
      png_set_expand_gray_1_2_4_to_8(png);
      png_set_gray_to_rgb(png);
    }
    if ((color_type & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, info, PNG_INFO_tRNS)) {
      png_set_strip_alpha(png);
    }
    png_read_update_info(png, info);
    if (png_get_channels(png, info) != 3 || png_get_rowbytes(png, info) != width * 3) {
      png_error(png, "unsupported pixel format");
    }
    for (png_uint_32 y = 0; y < height; ++y) {
      state->rows[y] = pixels + static_cast<size_t>(y) * width * 3;
    }
    png_read_image(png, state->rows.data());
  }
  // Like PIL, accept a file that ends after the image data (no IEND): png_read_end is not called.
  png_destroy_read_struct(&png, &info, nullptr);
  return state->image;
}

/// Checks `image` is a uint8 [H, W, 3] tensor and returns it contiguous on the CPU.
inline torch::Tensor checked_rgb(const torch::Tensor& image, const std::string& what) {
  if (image.dim() != 3 || image.size(2) != 3 || image.scalar_type() != torch::kUInt8) {
    throw std::runtime_error(what + ": expected a uint8 [H, W, 3] RGB image, got " +
                             std::string(image.scalar_type() == torch::kUInt8 ? "uint8 " : "non-uint8 ") +
                             c10::str(image.sizes()));
  }
  if (image.size(0) == 0 || image.size(1) == 0) throw std::runtime_error(what + ": empty image");
  return image.to(torch::kCPU).contiguous();
}

}  // namespace detail

/// Decodes a JPEG or PNG file (by content, not extension) into a uint8 [H, W, 3] RGB tensor.
/// Throws InputError naming the file if it is missing, not a regular file, larger than
/// 1 GiB, truncated, corrupt, not a picture, or claims more than max_image_pixels() pixels.
inline torch::Tensor read_image(const std::string& path) {
  std::vector<unsigned char> bytes;
  try {
    bytes = detail::read_file_bytes(path);
  } catch (const std::runtime_error& error) {  // missing, not a regular file, too large
    throw InputError(error.what());
  }
  if (detail::is_jpeg(bytes)) return detail::decode_jpeg(bytes, path);
  if (detail::is_png(bytes)) return detail::decode_png(bytes, path);
  throw InputError("cannot read image " + path + ": not a JPEG or PNG file");
}

/// Encodes a uint8 [H, W, 3] RGB image as JPEG (4:2:0, like PIL's default) into `path`,
/// atomically: a failed write leaves no file behind.
inline void write_jpeg(const std::string& path, const torch::Tensor& image, int quality = 90) {
  const auto rgb = detail::checked_rgb(image, "write_jpeg " + path);
  if (quality < 1 || quality > 100) {
    throw std::runtime_error("write_jpeg " + path + ": quality must be in 1..100");
  }
  detail::TurboJpegHandle encoder(true);
  unsigned char* buffer = nullptr;
  unsigned long size = 0;
  const int status =
      tjCompress2(encoder.handle, rgb.data_ptr<uint8_t>(), static_cast<int>(rgb.size(1)), 0,
                  static_cast<int>(rgb.size(0)), TJPF_RGB, &buffer, &size, TJSAMP_420, quality, 0);
  if (status != 0) {
    tjFree(buffer);
    throw std::runtime_error("cannot encode JPEG " + path + ": " + tjGetErrorStr2(encoder.handle));
  }
  std::vector<unsigned char> bytes(buffer, buffer + size);
  tjFree(buffer);
  detail::write_file_atomically(path, bytes);
}

/// Encodes a uint8 [H, W, 3] RGB image as PNG into `path`, atomically.
inline void write_png(const std::string& path, const torch::Tensor& image) {
  detail::check_image_libraries();
  const auto rgb = detail::checked_rgb(image, "write_png " + path);
  png_image description;
  std::memset(&description, 0, sizeof(description));
  description.version = PNG_IMAGE_VERSION;
  description.width = static_cast<png_uint_32>(rgb.size(1));
  description.height = static_cast<png_uint_32>(rgb.size(0));
  description.format = PNG_FORMAT_RGB;
  png_alloc_size_t size = 0;
  if (!png_image_write_to_memory(&description, nullptr, &size, 0, rgb.data_ptr<uint8_t>(), 0,
                                 nullptr)) {
    throw std::runtime_error("cannot encode PNG " + path + ": " + description.message);
  }
  std::vector<unsigned char> bytes(size);
  if (!png_image_write_to_memory(&description, bytes.data(), &size, 0, rgb.data_ptr<uint8_t>(),
                                 0, nullptr)) {
    throw std::runtime_error("cannot encode PNG " + path + ": " + description.message);
  }
  bytes.resize(size);
  detail::write_file_atomically(path, bytes);
}

}  // namespace reidnet
