// Tests of the CPU emulator of the CUDA execution model itself (src/backend/cuda/emu/, built
// only against tuner_lib_emu): that it runs kernels as CUDA specifies (barriers, warp exchanges,
// shared memory, conversions) and that it reports what a GPU would hang or fault on.
#include <gtest/gtest.h>
#include <mma.h>

#include <vector>

#include "backend/cuda/cuda_common.h"
#include "core/dtype.h"
#include "testing.h"

namespace tuner::cuda {
namespace {

// out[i] = sum over the block of in (block_sum: warp shuffles and two barriers).
__global__ void block_sum_kernel(float* out, const float* in) {
    __shared__ float shared[32];
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    out[i] = block_sum(in[i], shared);
}

// Every shuffle flavour of lane values (lane * 10).
__global__ void shuffle_kernel(int* out) {
    const int lane = threadIdx.x & 31, v = lane * 10;
    int* o = out + threadIdx.x * 6;
    o[0] = __shfl_sync(0xffffffffu, v, 3);
    o[1] = __shfl_up_sync(0xffffffffu, v, 2);
    o[2] = __shfl_down_sync(0xffffffffu, v, 2, 16);
    o[3] = __shfl_xor_sync(0xffffffffu, v, 1);
    o[4] = int(__ballot_sync(0xffffffffu, lane % 3 == 0));
    o[5] = __syncthreads_count(lane < 5);
}

// Threads of a block communicate through dynamic shared memory: reversed copy.
__global__ void reverse_kernel(float* out, const float* in) {
    DYNAMIC_SHARED(float, s);
    s[threadIdx.x] = in[threadIdx.x];
    __syncthreads();
    out[threadIdx.x] = s[blockDim.x - 1 - threadIdx.x];
}

// A barrier inside a branch only some threads take: a deadlock on the GPU.
__global__ void divergent_barrier_kernel(float* out) {
    if (threadIdx.x < 16) __syncthreads();
    out[threadIdx.x] = 1.0f;
}

// Writes one float past the dynamic shared memory it was given.
__global__ void smem_overrun_kernel(float* out) {
    DYNAMIC_SHARED(float, s);
    s[threadIdx.x + 1024] = 1.0f;
    out[0] = s[0];
}

__global__ void bf16_kernel(uint16_t* out, const float* in, int n) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        out[i] = __bfloat16_as_ushort(__float2bfloat16_rn(in[i]));
}

namespace wmma = nvcuda::wmma;
using Acc = wmma::fragment<wmma::accumulator, 16, 16, 16, float>;

// d (16 x 16, row-major) = a (16 x 32, row-major bf16) b (32 x 16, stored column-major) + c, in two
// k steps through shared memory (the 32-byte alignment load_matrix_sync needs).
__global__ void wmma_kernel(float* d, const __nv_bfloat16* a, const __nv_bfloat16* b, const float* c) {
    DYNAMIC_SHARED(float4, smem);
    __nv_bfloat16* sa = reinterpret_cast<__nv_bfloat16*>(smem);  // (16, 32)
    __nv_bfloat16* sb = sa + 16 * 32;                            // (16 cols, 32 k)
    float* sc = reinterpret_cast<float*>(sb + 16 * 32);          // (16, 16)
    for (int i = threadIdx.x; i < 512; i += 32) sa[i] = a[i], sb[i] = b[i];
    for (int i = threadIdx.x; i < 256; i += 32) sc[i] = c[i];
    __syncwarp();
    Acc acc;
    wmma::load_matrix_sync(acc, sc, 16, wmma::mem_row_major);
    for (int kk = 0; kk < 2; kk++) {
        wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
        wmma::load_matrix_sync(fa, sa + kk * 16, 32);
        wmma::load_matrix_sync(fb, sb + kk * 16, 32);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

// Lane l puts l * 8 + i in its x[i] and stores the tile; then lane 0 reads it back with or without
// a __syncwarp in between (out[256] = how many elements lane 0 saw still at -1).
__global__ void wmma_store_kernel(float* out, bool sync) {
    DYNAMIC_SHARED(float4, smem);
    float* s = reinterpret_cast<float*>(smem);
    for (int i = threadIdx.x; i < 256; i += 32) s[i] = -1.0f;
    __syncwarp();
    Acc acc;
    for (int i = 0; i < acc.num_elements; i++) acc.x[i] = float(threadIdx.x * acc.num_elements + i);
    wmma::store_matrix_sync(s, acc, 16, wmma::mem_row_major);
    if (sync) __syncwarp();
    if (threadIdx.x == 0) {
        int stale = 0;
        for (int i = 0; i < 256; i++) stale += s[i] == -1.0f;
        out[256] = float(stale);
    }
    __syncwarp();
    for (int i = threadIdx.x; i < 256; i += 32) out[i] = s[i];
}

// A matrix pointer 16 bytes past a 32-byte boundary, and a lane that skips the product.
__global__ void wmma_misaligned_kernel(float* out) {
    DYNAMIC_SHARED(float4, smem);
    Acc acc;
    wmma::load_matrix_sync(acc, reinterpret_cast<float*>(smem) + 4, 16, wmma::mem_row_major);
    out[threadIdx.x] = acc.x[0];
}
__global__ void wmma_divergent_kernel(float* out) {
    Acc acc;
    wmma::fill_fragment(acc, 1.0f);
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::row_major> fb;
    wmma::fill_fragment(fa, 1.0f);
    wmma::fill_fragment(fb, 1.0f);
    if (threadIdx.x != 7) wmma::mma_sync(acc, fa, fb, acc);
    out[threadIdx.x] = acc.x[0];
}

template <typename T>
T* device(const std::vector<T>& h) {
    void* d = nullptr;
    EXPECT_EQ(cudaMalloc(&d, h.size() * sizeof(T)), cudaSuccess);
    EXPECT_EQ(cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice), cudaSuccess);
    return static_cast<T*>(d);
}
template <typename T>
std::vector<T> host(const T* d, size_t n) {
    std::vector<T> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), d, n * sizeof(T), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
}

TEST(CudaEmu, AvailableAndSaysItIsTheEmulator) {
    EXPECT_TRUE(available());
    EXPECT_NE(device_summary().find("emulator"), std::string::npos);
}

TEST(CudaEmu, BlockSumAcrossWarps) {
    const int threads = 96, blocks = 3;
    std::vector<float> in(size_t(threads * blocks));
    for (size_t i = 0; i < in.size(); i++) in[i] = float(i % 7);
    float* ind = device(in);
    float* outd = device(std::vector<float>(in.size(), 0.0f));
    launch(block_sum_kernel, blocks, threads, 0, nullptr, outd, ind);
    CUDA_LAUNCH_CHECK("block_sum_kernel");
    const auto out = host(outd, in.size());
    for (int b = 0; b < blocks; b++) {
        float want = 0.0f;
        for (int t = 0; t < threads; t++) want += in[size_t(b * threads + t)];
        for (int t = 0; t < threads; t++) EXPECT_EQ(out[size_t(b * threads + t)], want) << b << " " << t;
    }
}

TEST(CudaEmu, ShuffleSemantics) {
    int* outd = device(std::vector<int>(64 * 6, -1));
    launch(shuffle_kernel, 1, 64, 0, nullptr, outd);
    CUDA_LAUNCH_CHECK("shuffle_kernel");
    const auto out = host(outd, 64 * 6);
    for (int t = 0; t < 64; t++) {
        const int lane = t & 31;
        const int* o = out.data() + t * 6;
        EXPECT_EQ(o[0], 30);
        EXPECT_EQ(o[1], lane >= 2 ? (lane - 2) * 10 : lane * 10);                // up: own value below delta
        EXPECT_EQ(o[2], (lane % 16) + 2 < 16 ? (lane + 2) * 10 : lane * 10);    // down within 16-lane segments
        EXPECT_EQ(o[3], (lane ^ 1) * 10);
        EXPECT_EQ(unsigned(o[4]), 0x49249249u);                                  // lanes 0, 3, 6, ...
        EXPECT_EQ(o[5], 10);                                                     // lanes 0-4 of both warps
    }
}

TEST(CudaEmu, DynamicSharedMemoryAndItsLimit) {
    std::vector<float> in(256);
    for (size_t i = 0; i < in.size(); i++) in[i] = float(i);
    float* ind = device(in);
    float* outd = device(std::vector<float>(256, 0.0f));
    launch(reverse_kernel, 1, 256, 256 * sizeof(float), nullptr, outd, ind);
    CUDA_LAUNCH_CHECK("reverse_kernel");
    const auto out = host(outd, 256);
    for (int i = 0; i < 256; i++) EXPECT_EQ(out[size_t(i)], float(255 - i));
    // Over 48 KiB without cudaFuncSetAttribute: a launch error, as on the GPU.
    launch(reverse_kernel, 1, 256, 64 << 10, nullptr, outd, ind);
    const std::string msg = tuner::testing::error_of([] { CUDA_LAUNCH_CHECK("reverse_kernel"); });
    EXPECT_NE(msg.find("dynamic shared memory"), std::string::npos) << msg;
}

TEST(CudaEmu, Bf16ConversionMatchesDtypeH) {
    std::vector<float> in;
    tuner::testing::Rng rng(5);
    for (int i = 0; i < 20000; i++) {
        const uint32_t bits = uint32_t(rng.next());
        float f;
        std::memcpy(&f, &bits, 4);
        if (f == f) in.push_back(f);  // NaN payloads: CUDA returns its canonical NaN
    }
    for (float f : {0.0f, -0.0f, 1.0f, 1.00390625f, 1.01171875f, 65504.0f, 3.4e38f, 1e-40f}) in.push_back(f);
    float* ind = device(in);
    uint16_t* outd = device(std::vector<uint16_t>(in.size(), 0));
    launch(bf16_kernel, 4, 128, 0, nullptr, outd, ind, int(in.size()));
    const auto out = host(outd, in.size());
    for (size_t i = 0; i < in.size(); i++) ASSERT_EQ(out[i], f32_to_bf16(in[i])) << in[i];
}

TEST(CudaEmu, WmmaIsAnExactBf16ProductWithF32Accumulation) {
    const auto af = testing::random_floats(512, 7), bf = testing::random_floats(512, 8), c = testing::random_floats(256, 9);
    std::vector<__nv_bfloat16> a(512), b(512);
    for (int i = 0; i < 512; i++) a[size_t(i)] = __float2bfloat16_rn(af[size_t(i)]), b[size_t(i)] = __float2bfloat16_rn(bf[size_t(i)]);
    float* dd = device(std::vector<float>(256, 0.0f));
    launch(wmma_kernel, 1, 32, 512 * 2 * 2 + 256 * 4, nullptr, dd, device(a), device(b), device(c));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto d = host(dd, 256);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 16; j++) {
            double want = c[size_t(i * 16 + j)];  // b holds column j's 32 k values contiguously
            for (int k = 0; k < 32; k++) want += double(float(a[size_t(i * 32 + k)])) * double(float(b[size_t(j * 32 + k)]));
            // 32 exact products summed in f32: within a few ulps of the sum of magnitudes (~10).
            ASSERT_NEAR(d[size_t(i * 16 + j)], want, 1e-5) << i << "," << j;
        }
}

TEST(CudaEmu, WmmaStoreIsAPermutationVisibleAfterSyncwarp) {
    for (bool sync : {false, true}) {
        float* outd = device(std::vector<float>(257, 0.0f));
        launch(wmma_store_kernel, 1, 32, 256 * 4, nullptr, outd, sync);
        const auto out = host(outd, 257);
        std::vector<int> seen(256, 0);
        int identity = 0;
        for (int i = 0; i < 256; i++) {
            const int v = int(out[size_t(i)]);
            ASSERT_TRUE(v >= 0 && v < 256) << i;
            seen[size_t(v)]++;
            identity += v == i;
        }
        for (int v = 0; v < 256; v++) EXPECT_EQ(seen[size_t(v)], 1) << v;  // every element stored once
        EXPECT_LT(identity, 32);  // the element-to-lane map is not the obvious one
        if (sync) EXPECT_EQ(out[256], 0.0f);
        else EXPECT_GT(out[256], 0.0f);  // other lanes' elements not yet stored: needs the __syncwarp
    }
}

using CudaEmuDeathTest = ::testing::Test;

TEST_F(CudaEmuDeathTest, WmmaMisalignedPointerAndDivergentMmaAreReported) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    float* outd = device(std::vector<float>(32, 0.0f));
    EXPECT_DEATH(launch(wmma_misaligned_kernel, 1, 32, 1024, nullptr, outd),
                 "wmma_misaligned_kernel.*load_matrix_sync: pointer .* is not 256-bit");
    EXPECT_DEATH(launch(wmma_divergent_kernel, 1, 32, 0, nullptr, outd), "DEADLOCK.*mma_sync");
}

TEST_F(CudaEmuDeathTest, DivergentBarrierIsADeadlock) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    float* outd = device(std::vector<float>(64, 0.0f));
    EXPECT_DEATH(launch(divergent_barrier_kernel, 2, 64, 0, nullptr, outd),
                 "divergent_barrier_kernel, block \\(0,0,0\\).*DEADLOCK.*thread \\(0,0,0\\) waits at __syncthreads");
}

TEST_F(CudaEmuDeathTest, SharedMemoryOverrunIsReported) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    float* outd = device(std::vector<float>(64, 0.0f));
    EXPECT_DEATH(launch(smem_overrun_kernel, 1, 32, 1024 * sizeof(float), nullptr, outd),
                 "smem_overrun_kernel.*past the launch's 4096 bytes");
}

}  // namespace
}  // namespace tuner::cuda
