// A stand-in for a bundled copy of libjpeg-turbo and libpng (as Python wheels carry): it
// defines their entry points, so that LD_PRELOAD puts it ahead of the real libraries. The
// image_libraries test checks that reidnet refuses it with a message instead of calling it.
#include <cstddef>

extern "C" {
void* tjInitDecompress() { return nullptr; }
void* tjInitCompress() { return nullptr; }
void* png_create_read_struct(const char*, void*, void*, void*) { return nullptr; }
int png_image_write_to_memory(void*, void*, std::size_t*, int, const void*, std::ptrdiff_t,
                              const void*) {
  return 0;
}
}
