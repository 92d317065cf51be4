#include "core/scratch.h"

#include <atomic>
#include <cstdlib>

#include "core/error.h"

namespace tuner {

static std::atomic<size_t> g_scratch_bytes{0};

namespace {
struct ThreadScratch {
    float* ptr[int(ScratchSlot::kCount)] = {};
    size_t cap[int(ScratchSlot::kCount)] = {};
    ~ThreadScratch() {
        for (int i = 0; i < int(ScratchSlot::kCount); i++) {
            std::free(ptr[i]);
            g_scratch_bytes -= cap[i] * sizeof(float);
        }
    }
};
thread_local ThreadScratch t_scratch;
}  // namespace

float* scratch_f32(ScratchSlot slot, size_t n) {
    int s = int(slot);
    if (n > t_scratch.cap[s]) {
        std::free(t_scratch.ptr[s]);
        size_t bytes = (n * sizeof(float) + 63) / 64 * 64;
        t_scratch.ptr[s] = static_cast<float*>(std::aligned_alloc(64, bytes));
        if (!t_scratch.ptr[s]) fail("[memory] could not allocate {} bytes of kernel scratch", bytes);
        g_scratch_bytes += bytes - t_scratch.cap[s] * sizeof(float);
        t_scratch.cap[s] = bytes / sizeof(float);
    }
    return t_scratch.ptr[s];
}

size_t scratch_high_water() { return g_scratch_bytes.load(); }

}  // namespace tuner
