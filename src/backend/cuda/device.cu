// The CUDA runtime side of the backend: device discovery (available), the context (cuBLASLt
// handle and workspace), errors with their call site, the config, the ops' workspace, device
// arenas and copies. See cuda_backend.h.
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/weights.h"
#include "backend/kernels.h"
#include "core/arena.h"  // format_bytes

namespace tuner::cuda {

namespace {

// A kernel to ask the runtime about: cudaFuncGetAttributes fails when the device cannot run
// this binary's code (built for another architecture), which cudaGetDeviceCount does not see.
__global__ void probe_kernel() {}

#define TUNER_STRINGIFY2(...) #__VA_ARGS__
#define TUNER_STRINGIFY(...) TUNER_STRINGIFY2(__VA_ARGS__)
#if defined(__CUDA_ARCH_LIST__)
constexpr const char* kBuiltArchs = TUNER_STRINGIFY(__CUDA_ARCH_LIST__);  // e.g. "900"
#else
constexpr const char* kBuiltArchs = "(unknown)";
#endif

bool probe_device(std::string* why) {
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();  // not sticky, but leave no error behind for the next call
        *why = fmt::format("cudaGetDeviceCount: {} ({})", cudaGetErrorString(err), cudaGetErrorName(err));
        return false;
    }
    if (n <= 0) {
        *why = "cudaGetDeviceCount found no device";
        return false;
    }
    cudaDeviceProp p;
    err = cudaGetDeviceProperties(&p, 0);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        *why = fmt::format("cudaGetDeviceProperties(0): {}", cudaGetErrorString(err));
        return false;
    }
    if (p.major < 8) {
        *why = fmt::format("device 0 ({}) has compute capability {}.{}; tuner's CUDA kernels need 8.0 or newer "
                           "(bf16 tensor cores)",
                           p.name, p.major, p.minor);
        return false;
    }
    cudaFuncAttributes attr;
    err = cudaFuncGetAttributes(&attr, probe_kernel);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        *why = fmt::format("device 0 ({}, compute capability {}.{}) cannot run this build's kernels (compiled for "
                           "CUDA architectures {}): {}; rebuild with -DCMAKE_CUDA_ARCHITECTURES={}{}",
                           p.name, p.major, p.minor, kBuiltArchs, cudaGetErrorString(err), p.major, p.minor);
        return false;
    }
    return true;
}

Context* create_context() {
    auto* c = new Context();  // never freed: ops may run from static destructors' callers until exit
    CUDA_CHECK(cudaSetDevice(c->device));
    CUDA_CHECK(cudaDeviceGetAttribute(&c->sm_count, cudaDevAttrMultiProcessorCount, c->device));
    int smem = 0;
    CUDA_CHECK(cudaDeviceGetAttribute(&smem, cudaDevAttrMaxSharedMemoryPerBlockOptin, c->device));
    c->smem_optin = size_t(smem);
    CUBLAS_CHECK(cublasLtCreate(&c->lt));
    c->lt_workspace_bytes = size_t(32) << 20;
    CUDA_CHECK(cudaMalloc(&c->lt_workspace, c->lt_workspace_bytes));
    init_weight_tables();
    return c;
}

// The defaults, with TUNER_CUDA_ATTENTION=mma|wmma picking the bf16 attention kernels: a way to
// rerun anything on the other implementation without rebuilding (scripts/gpu-check.sh falls back
// to wmma for the runs after a failed mma test). Another value is reported on stderr (this runs
// before main, where an exception could not be reported) and leaves the default.
Config initial_config() {
    Config c;
    const char* e = std::getenv("TUNER_CUDA_ATTENTION");
    if (!e || !*e) return c;
    if (std::strcmp(e, "mma") == 0) c.attention = AttentionKernels::MMA;
    else if (std::strcmp(e, "wmma") == 0) c.attention = AttentionKernels::WMMA;
    else std::fprintf(stderr, "[cuda] TUNER_CUDA_ATTENTION=%s: expected mma or wmma; using mma\n", e);
    return c;
}

std::mutex g_mutex;  // config and workspace changes
Config g_config = initial_config();
void* g_ws_base = nullptr;
size_t g_ws_bytes = 0;
DeviceArena* g_ws_owned = nullptr;  // reserve_workspace's buffer (leaked at exit on purpose)

}  // namespace

// ---- errors -------------------------------------------------------------------------------------

void cuda_fail(const char* call, const char* file, int line, const char* what) {
    // The path from src/ on: the same on every machine that builds the tree.
    const char* rel = std::strstr(file, "src/");
    fail("[cuda] {}:{}: {}: {}", rel ? rel : file, line, call, what);
}

void check_act_dtype(DType t, const char* op) {
    if (t != DType::F32 && t != DType::BF16) fail("[cuda] {}: activations are f32 or bf16, got {}", op, dtype_name(t));
}

// ---- device ---------------------------------------------------------------------------------------

bool available(std::string* why) {
    static std::once_flag once;
    static bool ok = false;
    static std::string reason;
    std::call_once(once, [] { ok = probe_device(&reason); });
    if (!ok && why) *why = reason;
    return ok;
}

Context& context(const char* op) {
    std::string why;
    if (!available(&why)) {  // cached after the first call
        if (op) fail("[cuda] {}: no CUDA device: {}", op, why);
        fail("[cuda] no CUDA device: {}", why);
    }
    static Context* c = create_context();  // a throw leaves it uninitialised: the next call retries
    return *c;
}

void init() { (void)context("init"); }

std::string device_summary() {
    const Context& c = context();
#if defined(TUNER_CUDA_EMU)
    (void)c;
    return "CPU emulator of the CUDA execution model (TUNER_CUDA_EMU: kernel logic only, no timing, host memory)";
#endif
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, c.device));
    return fmt::format("{} (compute capability {}.{}, {} SMs, {})", p.name, p.major, p.minor, p.multiProcessorCount,
                       format_bytes(p.totalGlobalMem));
}

void synchronize() {
    init();
    CUDA_CHECK(cudaDeviceSynchronize());
}

// ---- config ---------------------------------------------------------------------------------------

const Config& config() { return g_config; }

void set_config(const Config& c) {
    if (c.weight_tile_elems < 1 || c.ce_logit_elems < 1)
        fail("[cuda] set_config: weight_tile_elems and ce_logit_elems must be positive");
    std::lock_guard<std::mutex> lock(g_mutex);
    g_config = c;
}

// ---- workspace ------------------------------------------------------------------------------------

void set_workspace(void* base, size_t bytes) {
    std::lock_guard<std::mutex> lock(g_mutex);
    g_ws_base = base;
    g_ws_bytes = base ? bytes : 0;
}

void reserve_workspace(size_t bytes) {
    std::lock_guard<std::mutex> lock(g_mutex);
    if (g_ws_owned && g_ws_owned->capacity() >= bytes) {
        g_ws_base = g_ws_owned->base(), g_ws_bytes = g_ws_owned->capacity();
        return;
    }
    if (g_ws_owned) {
        CUDA_CHECK(cudaDeviceSynchronize());  // queued ops may still read the old buffer
        delete g_ws_owned;
        g_ws_owned = nullptr;
    }
    g_ws_owned = new DeviceArena("workspace", std::max<size_t>(bytes, kDeviceAlign));
    g_ws_base = g_ws_owned->base(), g_ws_bytes = g_ws_owned->capacity();
}

size_t workspace_bytes() { return g_ws_bytes; }

Workspace::Workspace(const char* op, size_t need) {
    base_ = static_cast<uint8_t*>(g_ws_base), cap_ = g_ws_bytes;
    if (need > cap_)
        fail("[cuda] {}: needs {} of device workspace, {} reserved (plan it with cuda::*_workspace_bytes and "
             "cuda::reserve_workspace or cuda::set_workspace)",
             op, format_bytes(need), format_bytes(cap_));
}

void* Workspace::take_bytes(size_t bytes) {
    const size_t n = ws_size(bytes);
    TUNER_ASSERT_MSG(used_ + n <= cap_, "CUDA workspace planner under-estimated an op's scratch");
    void* p = base_ + used_;
    used_ += n;
    return p;
}

// ---- arenas and copies ------------------------------------------------------------------------------

DeviceArena::DeviceArena(std::string name, size_t capacity) : name_(std::move(name)) {
    init();
    capacity = ws_size(capacity);
    const cudaError_t err = cudaMalloc(&base_, capacity);
    if (err != cudaSuccess) {
        (void)cudaGetLastError();
        size_t free_b = 0, total_b = 0;
        (void)cudaMemGetInfo(&free_b, &total_b);
        base_ = nullptr;
        fail("[cuda] arena '{}': cudaMalloc of {} failed: {} ({} free of {})", name_, format_bytes(capacity),
             cudaGetErrorString(err), format_bytes(free_b), format_bytes(total_b));
    }
    capacity_ = capacity;
}

DeviceArena::~DeviceArena() {
    if (base_) (void)cudaFree(base_);  // errors at exit (runtime already unloading) are harmless
}

DeviceArena::DeviceArena(DeviceArena&& o) noexcept { *this = std::move(o); }

DeviceArena& DeviceArena::operator=(DeviceArena&& o) noexcept {
    if (this != &o) {
        if (base_) (void)cudaFree(base_);
        name_ = std::move(o.name_), views_ = std::move(o.views_);
        base_ = o.base_, capacity_ = o.capacity_, used_ = o.used_;
        o.base_ = nullptr, o.capacity_ = 0, o.used_ = 0;
    }
    return *this;
}

void* DeviceArena::alloc(size_t bytes, const std::string& view) {
    const size_t n = ws_size(bytes);
    if (used_ + n > capacity_)
        fail("[cuda] arena '{}': view '{}' of {} does not fit ({} of {} used): the memory plan is wrong", name_, view,
             format_bytes(bytes), format_bytes(used_), format_bytes(capacity_));
    void* p = static_cast<uint8_t*>(base_) + used_;
    views_.push_back({view, used_, bytes});
    used_ += n;
    return p;
}

void* DeviceArena::find(const std::string& view) const {
    for (const View& v : views_)
        if (v.name == view) return static_cast<uint8_t*>(base_) + v.offset;
    return nullptr;
}

void DeviceArena::zero() {
    if (used_) CUDA_CHECK(cudaMemset(base_, 0, used_));
}

void copy_to_device(void* dst, const void* src, size_t bytes) {
    init();
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
}
void copy_to_host(void* dst, const void* src, size_t bytes) {
    init();
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
}
void copy_on_device(void* dst, const void* src, size_t bytes) {
    init();
    if (bytes) CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
}
void memset_device(void* dst, int byte, size_t bytes) {
    init();
    if (bytes) CUDA_CHECK(cudaMemset(dst, byte, bytes));
}

}  // namespace tuner::cuda
