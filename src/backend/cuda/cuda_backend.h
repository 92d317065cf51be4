// The CUDA backend's runtime, beside the kernel table (backend/kernels.h): device memory
// (DeviceArena), the kernels' scratch workspace, copies, the matmul compute precision, and the
// fused AdamW step. Plain C++ (no CUDA types), so any file can include it; a build without CUDA
// links no_cuda/ stubs that throw "[cuda] X: tuner was built without CUDA".
//
// Conventions of the CUDA kernel table (the same signatures as the CPU backend):
//  * Every pointer an op takes is DEVICE memory, including WeightView::data (for NF4 the whole
//    NF4 buffer, header included, copied to the device as it is laid out on the host).
//  * Ops run asynchronously on one stream (the legacy default stream, so a plain cudaMemcpy /
//    copy_to_host orders after them). lm_head_cross_entropy synchronises (it returns a count).
//  * Ops never allocate device memory. Scratch comes from one workspace set up before the first
//    op (reserve_workspace, or set_workspace with a view of a planned DeviceArena), sized with
//    the *_workspace_bytes planners below; an op whose workspace is too small throws and says
//    how much it needs. The first op (or init()) creates the cuBLASLt handle and its own 32 MiB
//    cuBLASLt workspace: once per process, never in the step loop.
//
//   std::string why;
//   if (!cuda::available(&why)) fail("no CUDA device: {}", why);
//   cuda::DeviceArena acts("activations", plan.role_bytes("activations"));
//   float* x = acts.alloc_f32(N * C, "x");
//   cuda::reserve_workspace(cuda::matmul_workspace_bytes(N, w));
//   cuda::matmul_forward(y, x, w, nullptr, N, false);
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "backend/kernels.h"

namespace tuner::cuda {

// ---- device and precision -------------------------------------------------------------------

// Creates the CUDA context, the cuBLASLt handle and its workspace; throws "[cuda] no CUDA
// device: ..." when available() is false. Ops call it on first use.
void init();
// "NVIDIA H200 (compute capability 9.0, 132 SMs, 139.8 GiB)".
std::string device_summary();
void synchronize();  // waits for every queued op; reports an asynchronous kernel error

// How the GEMMs inside matmul_* and lm_head_cross_entropy compute (f32 accumulation always):
//  F32   operands as f32 (a low-precision weight is dequantised to f32 tiles): the same
//        numbers as the CPU backend up to summation order. CUDA cores, ~60 TFLOP/s on H100.
//  TF32  as F32 with tensor-core TF32 products (10-bit mantissa inputs, f32 accumulation).
//  BF16  operands rounded to bf16 (a bf16 weight is used as stored; f32/f16/quantised weights
//        are converted to bf16 tiles; f32 activations are converted to bf16 in the workspace,
//        bf16 activations (kernels.h ActIn) are used as stored), tensor cores with f32
//        accumulation: DESIGN.md's "CUDA in bf16 with f32 accumulation". Relative error of a
//        product ~2^-8 against F32. A bf16 output (ActOut) is written by the GEMM as bf16.
// bf16 activations (ActIn / ActOut) in matmul_* need BF16; under F32 / TF32 they throw (the
// other ops take them under any compute).
// It also picks the attention kernels: BF16 runs a bf16 tensor-core flash attention (HD <= 128;
// which one: Config::attention below), F32 and TF32 the f32 kernels of attention.cu.
enum class MatmulCompute : uint8_t { F32, TF32, BF16 };
// From the names the config (cuda_matmul) and the CLI (--cuda-matmul) use: "bf16", "tf32", "f32".
// Anything else is BF16, the default (both callers validate the name first).
inline MatmulCompute matmul_compute_from_name(const std::string& name) {
    return name == "f32" ? MatmulCompute::F32 : name == "tf32" ? MatmulCompute::TF32 : MatmulCompute::BF16;
}

// The bf16 tensor-core attention under BF16 compute (f32 / tf32 compute always run attention.cu's
// f32 kernels):
//  MMA   FlashAttention-2 style on mma.sync m16n8k16, P kept in registers, cp.async double
//        buffering (attention_mma.h; HD % 8 == 0, HD <= 128, q/k/v of one dtype, 16-byte aligned
//        pointers); a call it does not take falls back to WMMA. The default.
//  WMMA  the first tensor-core version (attention_tc.cuh, nvcuda::wmma; HD <= 128).
// The environment variable TUNER_CUDA_ATTENTION=mma|wmma sets the default (read once at start).
// Both are checked against the CPU on the emulator; neither has been timed on a GPU yet, so the
// benchmark (tests/test_cuda_bench.cpp) times both side by side.
enum class AttentionKernels : uint8_t { MMA, WMMA };

struct Config {
    MatmulCompute compute = MatmulCompute::BF16;
    AttentionKernels attention = AttentionKernels::MMA;
    // Elements of one dequantised weight tile (rows of W converted at a time): 16 Mi elements
    // is 32 MiB in bf16, enough for a full-speed GEMM per tile.
    int64_t weight_tile_elems = int64_t(16) << 20;
    // Logits elements of one lm_head + cross-entropy chunk (rows x V, f32): 32 Mi = 128 MiB.
    int64_t ce_logit_elems = int64_t(32) << 20;
};
const Config& config();
void set_config(const Config& c);  // between ops only (the workspace plan depends on it)

// ---- memory -----------------------------------------------------------------------------------

constexpr size_t kDeviceAlign = 256;  // what cuBLASLt assumes of its operands by default

// llm.c-style arena in device memory: one cudaMalloc of `capacity` bytes at construction,
// then named views carved off in order (each aligned to kDeviceAlign). Nothing is freed until
// the arena is destroyed; reset() forgets the views and keeps the memory.
class DeviceArena {
  public:
    struct View {
        std::string name;
        size_t offset = 0, bytes = 0;
    };

    DeviceArena() = default;
    DeviceArena(std::string name, size_t capacity);
    ~DeviceArena();
    DeviceArena(const DeviceArena&) = delete;
    DeviceArena& operator=(const DeviceArena&) = delete;
    DeviceArena(DeviceArena&& other) noexcept;
    DeviceArena& operator=(DeviceArena&& other) noexcept;

    // `bytes` bytes of device memory named `view`; running past the capacity throws (a
    // planning error: the message names the arena, the view and the sizes).
    void* alloc(size_t bytes, const std::string& view);
    float* alloc_f32(size_t n, const std::string& view) { return static_cast<float*>(alloc(n * 4, view)); }
    int32_t* alloc_i32(size_t n, const std::string& view) { return static_cast<int32_t*>(alloc(n * 4, view)); }
    void* find(const std::string& view) const;  // the named view's pointer, or null
    void reset() { used_ = 0, views_.clear(); }
    void zero();  // cudaMemset of the used part

    const std::string& name() const { return name_; }
    size_t capacity() const { return capacity_; }
    size_t used() const { return used_; }
    void* base() const { return base_; }
    const std::vector<View>& views() const { return views_; }

  private:
    std::string name_;
    void* base_ = nullptr;
    size_t capacity_ = 0, used_ = 0;
    std::vector<View> views_;
};

// Synchronous copies (cudaMemcpy on the default stream: they wait for queued ops).
void copy_to_device(void* dst, const void* src, size_t bytes);
void copy_to_host(void* dst, const void* src, size_t bytes);
void copy_on_device(void* dst, const void* src, size_t bytes);
void memset_device(void* dst, int byte, size_t bytes);

// ---- the ops' workspace -----------------------------------------------------------------------
// Bytes of workspace each op needs for these shapes under the current config(). An arena plan
// takes the max over every op of a step.
size_t matmul_workspace_bytes(int64_t N, const WeightView& w);  // any of the three matmul ops
size_t attention_workspace_bytes(const AttnShape& s);             // forward and backward
size_t cross_entropy_workspace_bytes(int64_t N, const WeightView& head);
// Ops other than these need none.

// Points the ops at [base, base + bytes) of device memory (a view of a planned DeviceArena).
void set_workspace(void* base, size_t bytes);
// Or: a workspace owned by the backend, one cudaMalloc; grows (reallocates) only here, never
// inside an op. Call with the plan's maximum before the step loop.
void reserve_workspace(size_t bytes);
size_t workspace_bytes();

// ---- optimizer ----------------------------------------------------------------------------------
// One fused AdamW update of n f32 parameters (torch.optim.AdamW, as train/adamw.h):
//   p = p * (1 - lr wd);  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g;
//   p = p + (-lr / (1 - b1^t)) m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The scalars are formed on the host exactly as AdamW::step forms them (double, then rounded
// to f32); the kernel rounds every operation separately, in torch's order.
struct AdamWScalars {
    float decay = 1.0f;  // 1 - lr * weight_decay
    float beta1 = 0.9f, one_minus_beta1 = 0.1f, beta2 = 0.999f, one_minus_beta2 = 0.001f;
    float neg_step_size = 0.0f;          // -lr / (1 - beta1^t)
    float bias_correction2_sqrt = 1.0f;  // sqrt(1 - beta2^t)
    float eps = 1e-8f;
    bool decays = false;  // weight_decay != 0
};
// t is the step number after incrementing (1 for the first step), as in AdamW::step.
AdamWScalars adamw_scalars(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t t);
// p, m, v updated in place; g read. All device pointers of n floats.
void adamw_step(float* p, const float* g, float* m, float* v, int64_t n, const AdamWScalars& s);

}  // namespace tuner::cuda
