// Per-thread scratch memory for kernels (tiles of converted weights, attention score blocks,
// cross-entropy logit chunks). Each thread's buffer grows on first use to the largest size
// asked for and is then reused, so after the first step nothing is allocated in the step loop.
// scratch_high_water() reports the total for the memory plan.
//
//   float* tile = scratch_f32(ScratchSlot::kWeightTile, rows * K);   // valid until the next call
#pragma once

#include <cstddef>

namespace tuner {

// Independent slots so that one kernel can hold several scratch buffers at once.
enum class ScratchSlot : int { kWeightTile = 0, kAttention = 1, kLogits = 2, kMisc = 3, kCount = 4 };

// Returns a 64-byte aligned buffer of at least n floats owned by the calling thread.
float* scratch_f32(ScratchSlot slot, size_t n);

// Sum over threads and slots of the bytes held.
size_t scratch_high_water();

}  // namespace tuner
