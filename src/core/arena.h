// Arenas and the memory plan (llm.c style).
//
// Memory is planned before anything is allocated: a model computes the size of every
// parameter, gradient, optimizer moment and activation, adds each to a MemoryPlan under a role
// ("weights", "grads", "activations", ...), and then allocates one Arena per role with exactly
// that capacity. Inside the step loop nothing is allocated: tensors are views into arenas.
//
//   MemoryPlan plan;
//   plan.add("weights", "model.embed_tokens.weight", bytes);
//   Arena weights("weights", plan.role_bytes("weights"));
//   float* p = weights.alloc_f32(n);
//   plan.print(stdout);
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace tuner {

constexpr size_t kArenaAlign = 64;  // one cache line / one AVX-512 register

inline size_t align_up(size_t n, size_t a = kArenaAlign) { return (n + a - 1) / a * a; }

// A bump allocator over one large, aligned, zero-initialised buffer of fixed capacity.
class Arena {
  public:
    Arena() = default;
    Arena(std::string name, size_t capacity);
    // A non-owning arena over memory someone else allocated (a CUDA DeviceArena's buffer): the
    // same bump allocation, so host and device layouts come from the same code. Tensors it hands
    // out are tagged with `device`; zero() is for host memory only.
    static Arena over(std::string name, void* base, size_t capacity, Device device);
    ~Arena();
    Arena(const Arena&) = delete;
    Arena& operator=(const Arena&) = delete;
    Arena(Arena&& other) noexcept;
    Arena& operator=(Arena&& other) noexcept;

    // Returns `bytes` bytes aligned to kArenaAlign. Running past the capacity is a planning bug.
    void* alloc(size_t bytes);
    float* alloc_f32(size_t n) { return static_cast<float*>(alloc(n * sizeof(float))); }
    Tensor alloc_tensor(DType dtype, const std::vector<int64_t>& dims);
    void reset() { used_ = 0; }  // forget every allocation (memory is kept)
    void zero();                 // memset the used part to 0 (host arenas only)

    const std::string& name() const { return name_; }
    size_t capacity() const { return capacity_; }
    size_t used() const { return used_; }
    uint8_t* base() const { return base_; }
    Device device() const { return device_; }

  private:
    std::string name_;
    uint8_t* base_ = nullptr;
    size_t capacity_ = 0;
    size_t used_ = 0;
    bool owned_ = true;
    Device device_ = Device::CPU;
};

// A list of named allocations grouped by role; each entry is rounded up to kArenaAlign so
// that role_bytes() is exactly what an Arena needs for the same sequence of alloc() calls.
class MemoryPlan {
  public:
    void add(const std::string& role, const std::string& name, size_t bytes, size_t count = 1);
    size_t role_bytes(const std::string& role) const;
    size_t total_bytes() const;
    // Prints one line per role (and, with detail, the largest entries of each role).
    void print(FILE* out, bool detail = false) const;

    struct Entry {
        std::string name;
        size_t bytes;  // already aligned, times count
    };
    const std::map<std::string, std::vector<Entry>>& roles() const { return roles_; }

  private:
    std::map<std::string, std::vector<Entry>> roles_;
    std::vector<std::string> order_;  // roles in first-added order, for printing
};

std::string format_bytes(size_t bytes);  // "1.23 GiB", "512.0 MiB", "12.0 KiB"

// Peak resident set size of this process so far (VmHWM), in bytes; 0 if unknown.
size_t peak_rss_bytes();
size_t current_rss_bytes();

}  // namespace tuner
