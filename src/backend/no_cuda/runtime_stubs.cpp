// Built when nvcc was not found: the CUDA runtime API (backend/cuda/cuda_backend.h) links and
// says clearly that there is no CUDA, like the kernel table's stubs in stubs.cpp.
#include "backend/cuda/cuda_backend.h"
#include "core/error.h"

namespace tuner::cuda {

#define NO_CUDA(what) \
    fail("[cuda] {}: tuner was built without CUDA (nvcc was not found at build time, or -DTUNER_CUDA=OFF)", what)

void init() { NO_CUDA("init"); }
std::string device_summary() { return "no CUDA (tuner was built without CUDA)"; }
void synchronize() { NO_CUDA("synchronize"); }

namespace {
Config g_config;
}
const Config& config() { return g_config; }
void set_config(const Config& c) { g_config = c; }

DeviceArena::DeviceArena(std::string name, size_t) : name_(std::move(name)) { NO_CUDA("DeviceArena"); }
DeviceArena::~DeviceArena() = default;
DeviceArena::DeviceArena(DeviceArena&& o) noexcept { *this = std::move(o); }
DeviceArena& DeviceArena::operator=(DeviceArena&& o) noexcept {
    name_ = std::move(o.name_), views_ = std::move(o.views_);
    base_ = o.base_, capacity_ = o.capacity_, used_ = o.used_;
    o.base_ = nullptr, o.capacity_ = 0, o.used_ = 0;
    return *this;
}
void* DeviceArena::alloc(size_t, const std::string&) { NO_CUDA("DeviceArena::alloc"); }
void* DeviceArena::find(const std::string&) const { return nullptr; }
void DeviceArena::zero() { NO_CUDA("DeviceArena::zero"); }

void copy_to_device(void*, const void*, size_t) { NO_CUDA("copy_to_device"); }
void copy_to_host(void*, const void*, size_t) { NO_CUDA("copy_to_host"); }
void copy_on_device(void*, const void*, size_t) { NO_CUDA("copy_on_device"); }
void memset_device(void*, int, size_t) { NO_CUDA("memset_device"); }

size_t matmul_workspace_bytes(int64_t, const WeightView&) { return 0; }
size_t attention_workspace_bytes(const AttnShape&) { return 0; }
size_t cross_entropy_workspace_bytes(int64_t, const WeightView&) { return 0; }
void set_workspace(void*, size_t) { NO_CUDA("set_workspace"); }
void reserve_workspace(size_t) { NO_CUDA("reserve_workspace"); }
size_t workspace_bytes() { return 0; }

AdamWScalars adamw_scalars(double, double, double, double, double, int64_t) { NO_CUDA("adamw_scalars"); }
void adamw_step(float*, const float*, float*, float*, int64_t, const AdamWScalars&) { NO_CUDA("adamw_step"); }

}  // namespace tuner::cuda
