// Dropping the resident pages of a read-only file mapping once its bytes have been copied out.
//
// Loaders and exporters read weights straight from mmap'ed files (safetensors, GGUF). Every page
// they touch stays resident and counts in the process's RSS until it is unmapped, so a 13.5 GB
// model would cost 13.5 GB of RSS while loading even if it is quantised to 3.9 GB on the way.
// madvise(MADV_DONTNEED) on a read-only mapping drops those pages; a later read simply faults
// them in again from the file. Whole pages around [data, data + n) are dropped: a neighbour's
// page that goes too is re-read when needed.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>

namespace tuner {

inline void release_mapped_pages(const void* data, size_t n) {
    if (data == nullptr || n == 0) return;
    const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
    const uintptr_t begin = uintptr_t(data) / page * page;
    const uintptr_t end = (uintptr_t(data) + n + page - 1) / page * page;
    madvise(reinterpret_cast<void*>(begin), end - begin, MADV_DONTNEED);  // advice: failure is harmless
}

}  // namespace tuner
