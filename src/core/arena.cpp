#include "core/arena.h"

#include <cstdlib>
#include <cstring>
#include <algorithm>

namespace tuner {

Arena::Arena(std::string name, size_t capacity) : name_(std::move(name)), capacity_(align_up(capacity)) {
    if (capacity_ == 0) return;
    base_ = static_cast<uint8_t*>(std::aligned_alloc(kArenaAlign, capacity_));
    if (!base_) fail("[memory] could not allocate the {} arena of {}", name_, format_bytes(capacity_));
    std::memset(base_, 0, capacity_);
}

Arena Arena::over(std::string name, void* base, size_t capacity, Device device) {
    TUNER_ASSERT_MSG(reinterpret_cast<uintptr_t>(base) % kArenaAlign == 0, "Arena::over: unaligned base");
    Arena a;
    a.name_ = std::move(name);
    a.base_ = static_cast<uint8_t*>(base);
    a.capacity_ = capacity / kArenaAlign * kArenaAlign;
    a.owned_ = false;
    a.device_ = device;
    return a;
}

Arena::~Arena() {
    if (owned_) std::free(base_);
}

Arena::Arena(Arena&& o) noexcept
    : name_(std::move(o.name_)), base_(o.base_), capacity_(o.capacity_), used_(o.used_), owned_(o.owned_),
      device_(o.device_) {
    o.base_ = nullptr;
    o.capacity_ = o.used_ = 0;
    o.owned_ = true;
    o.device_ = Device::CPU;
}

Arena& Arena::operator=(Arena&& o) noexcept {
    if (this != &o) {
        if (owned_) std::free(base_);
        name_ = std::move(o.name_);
        base_ = o.base_;
        capacity_ = o.capacity_;
        used_ = o.used_;
        owned_ = o.owned_;
        device_ = o.device_;
        o.base_ = nullptr;
        o.capacity_ = o.used_ = 0;
        o.owned_ = true;
        o.device_ = Device::CPU;
    }
    return *this;
}

void* Arena::alloc(size_t bytes) {
    size_t n = align_up(bytes);
    TUNER_ASSERT_MSG(used_ + n <= capacity_, "arena over its planned capacity: the memory plan is wrong");
    void* p = base_ + used_;
    used_ += n;
    return p;
}

Tensor Arena::alloc_tensor(DType dtype, const std::vector<int64_t>& dims) {
    int64_t n = 1;
    for (int64_t d : dims) n *= d;
    return Tensor::view(alloc(size_t(n) * dtype_size(dtype)), dtype, dims, device_);
}

void Arena::zero() {
    TUNER_ASSERT_MSG(device_ == Device::CPU, "Arena::zero on device memory (use cuda::memset_device)");
    if (base_) std::memset(base_, 0, used_);
}

void MemoryPlan::add(const std::string& role, const std::string& name, size_t bytes, size_t count) {
    if (!roles_.count(role)) order_.push_back(role);
    roles_[role].push_back({name, align_up(bytes) * count});
}

size_t MemoryPlan::role_bytes(const std::string& role) const {
    auto it = roles_.find(role);
    if (it == roles_.end()) return 0;
    size_t s = 0;
    for (const auto& e : it->second) s += e.bytes;
    return s;
}

size_t MemoryPlan::total_bytes() const {
    size_t s = 0;
    for (const auto& [role, entries] : roles_) s += role_bytes(role);
    return s;
}

void MemoryPlan::print(FILE* out, bool detail) const {
    std::fprintf(out, "memory plan:\n");
    for (const auto& role : order_) {
        const auto& entries = roles_.at(role);
        std::fprintf(out, "  %-14s %12s  (%zu buffers)\n", role.c_str(), format_bytes(role_bytes(role)).c_str(),
                     entries.size());
        if (detail) {
            std::vector<Entry> sorted = entries;
            std::sort(sorted.begin(), sorted.end(), [](const Entry& a, const Entry& b) { return a.bytes > b.bytes; });
            for (size_t i = 0; i < sorted.size() && i < 5; i++)
                std::fprintf(out, "      %-40s %12s\n", sorted[i].name.c_str(), format_bytes(sorted[i].bytes).c_str());
        }
    }
    std::fprintf(out, "  %-14s %12s\n", "total", format_bytes(total_bytes()).c_str());
}

std::string format_bytes(size_t bytes) {
    const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = double(bytes);
    int u = 0;
    while (v >= 1024.0 && u < 4) {
        v /= 1024.0;
        u++;
    }
    return u == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.2f} {}", v, units[u]);
}

static size_t read_status_kb(const char* key) {
    FILE* f = std::fopen("/proc/self/status", "r");
    if (!f) return 0;
    char line[256];
    size_t kb = 0;
    size_t keylen = std::strlen(key);
    while (std::fgets(line, sizeof line, f)) {
        if (std::strncmp(line, key, keylen) == 0) {
            kb = std::strtoull(line + keylen, nullptr, 10);
            break;
        }
    }
    std::fclose(f);
    return kb * 1024;
}

size_t peak_rss_bytes() { return read_status_kb("VmHWM:"); }
size_t current_rss_bytes() { return read_status_kb("VmRSS:"); }

}  // namespace tuner
