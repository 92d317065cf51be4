// Tests of the CPU emulator of the CUDA execution model itself (src/backend/cuda/emu/, built
// only against tuner_lib_emu): that it runs kernels as CUDA specifies (barriers, warp exchanges,
// shared memory, conversions) and that it reports what a GPU would hang or fault on.
#include <gtest/gtest.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "backend/cuda/cuda_common.h"
#include "backend/cuda/mma_ptx.cuh"
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


// ---- mma.sync / ldmatrix / cp.async (mma_ptx.cuh on the emulator's mma_ptx_emu.h) ------------------
// The register layouts are written out here from the PTX ISA ("Matrix Fragments for mma.m16n8k16
// with floating point type"; g = lane >> 2, t = lane % 4), independently of the emulator's code.

// One m16n8k16: a (16 x 16 row-major bf16 bits), b (16 x 8, k-major: b[k * 8 + n]), c and d (16 x 8
// row-major f32). Each lane gathers its registers from global memory by the documented maps; with
// `wrong`, it swaps A registers 1 and 2 (a plausible mistake), which must change the result.
__global__ void mma_layout_kernel(float* d, const uint16_t* a, const uint16_t* b, const float* c, bool wrong) {
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    auto pair = [](uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); };
    uint32_t ra[4];
    ra[0] = pair(a[g * 16 + 2 * t], a[g * 16 + 2 * t + 1]);
    ra[1] = pair(a[(g + 8) * 16 + 2 * t], a[(g + 8) * 16 + 2 * t + 1]);
    ra[2] = pair(a[g * 16 + 2 * t + 8], a[g * 16 + 2 * t + 9]);
    ra[3] = pair(a[(g + 8) * 16 + 2 * t + 8], a[(g + 8) * 16 + 2 * t + 9]);
    if (wrong) {
        const uint32_t x = ra[1];
        ra[1] = ra[2], ra[2] = x;
    }
    const uint32_t rb0 = pair(b[(2 * t) * 8 + g], b[(2 * t + 1) * 8 + g]);
    const uint32_t rb1 = pair(b[(2 * t + 8) * 8 + g], b[(2 * t + 9) * 8 + g]);
    float acc[4] = {c[g * 8 + 2 * t], c[g * 8 + 2 * t + 1], c[(g + 8) * 8 + 2 * t], c[(g + 8) * 8 + 2 * t + 1]};
    ptx::mma_bf16_16816(acc, ra, rb0, rb1);
    d[g * 8 + 2 * t] = acc[0], d[g * 8 + 2 * t + 1] = acc[1];
    d[(g + 8) * 8 + 2 * t] = acc[2], d[(g + 8) * 8 + 2 * t + 1] = acc[3];
}

// ldmatrix.x4 and .x4.trans of four 8 x 8 matrices stored as a (32 rows x 8) row-major b16 array
// (matrix i = rows 8i .. 8i+7): out[lane * 8 + i] (plain) and out[lane * 8 + 4 + i] (.trans).
__global__ void ldmatrix_kernel(uint32_t* out, const uint16_t* in) {
    DYNAMIC_SHARED(uint4, smem);
    uint16_t* s = reinterpret_cast<uint16_t*>(smem);
    for (int i = threadIdx.x; i < 256; i += 32) s[i] = in[i];
    __syncwarp();
    uint32_t r[4], rt[4];
    ptx::ldmatrix_x4(r, s + threadIdx.x * 8);  // lane l: row l of the 32
    ptx::ldmatrix_x4_trans(rt, s + threadIdx.x * 8);
    for (int i = 0; i < 4; i++) out[threadIdx.x * 8 + i] = r[i], out[threadIdx.x * 8 + 4 + i] = rt[i];
}

// D (16 x 8) = A (16 x 16, row-major) B with all operands from shared memory by ldmatrix, as the
// attention kernels load them: A by .x4 (lane l: row l % 16, column 8 (l / 16)); B once from Bt
// (8 x 16: n rows, k columns) by .x2-as-.x4 without .trans, once from B (16 x 8: k rows) by .trans.
__global__ void ldmatrix_mma_kernel(float* d, const uint16_t* a, const uint16_t* bt, const uint16_t* bk) {
    DYNAMIC_SHARED(uint4, smem);
    uint16_t* sa = reinterpret_cast<uint16_t*>(smem);  // (16, 16)
    uint16_t* sbt = sa + 256;                          // (16, 16): Bt in rows 0-7, rows 8-15 zero
    uint16_t* sb = sbt + 256;                          // (16, 16): B in columns 0-7, columns 8-15 zero
    for (int i = threadIdx.x; i < 256; i += 32) {
        sa[i] = a[i];
        sbt[i] = i < 128 ? bt[i] : uint16_t(0);
        sb[i] = (i % 16) < 8 ? bk[(i / 16) * 8 + i % 16] : uint16_t(0);
    }
    __syncwarp();
    const int lane = threadIdx.x, g = lane >> 2, t = lane & 3;
    uint32_t ra[4], rb[4], rbt[4];
    ptx::ldmatrix_x4(ra, sa + (lane & 15) * 16 + 8 * (lane >> 4));
    // n rows [0, 16) x k [0, 16): registers 0, 1 for n-block 0.
    ptx::ldmatrix_x4(rb, sbt + ((lane & 7) + 8 * (lane >> 4)) * 16 + 8 * ((lane >> 3) & 1));
    // k rows [0, 16) x n [0, 16) (.trans): registers 0, 1 for n-block 0.
    ptx::ldmatrix_x4_trans(rbt, sb + (lane & 15) * 16 + 8 * (lane >> 4));
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f}, acc2[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    ptx::mma_bf16_16816(acc, ra, rb[0], rb[1]);
    ptx::mma_bf16_16816(acc2, ra, rbt[0], rbt[1]);
    for (int e = 0; e < 4; e++) {
        const int row = g + 8 * (e >> 1), col = 2 * t + (e & 1);
        d[row * 8 + col] = acc[e];
        d[128 + row * 8 + col] = acc2[e];
    }
}

// cp.async: 16-byte copies of in[0..63] into shared memory in two groups (the second zero-filled
// past src-size 0 for chunk 3), read back before any wait, after wait_group 1 and after
// wait_group 0: out[0..63], [64..127], [128..191] (thread 0 alone issues and reads).
__global__ void cp_async_kernel(float* out, const float* in) {
    DYNAMIC_SHARED(float4, smem);
    float* s = reinterpret_cast<float*>(smem);
    if (threadIdx.x != 0) return;
    for (int i = 0; i < 64; i++) s[i] = -1.0f;
    for (int c = 0; c < 8; c++) ptx::cp_async_16(s + 4 * c, in + 4 * c, true);  // group 0: floats 0-31
    ptx::cp_async_commit();
    for (int c = 8; c < 16; c++) ptx::cp_async_16(s + 4 * c, in + 4 * c, c != 11);  // group 1: 32-63
    ptx::cp_async_commit();
    for (int i = 0; i < 64; i++) out[i] = s[i];
    ptx::cp_async_wait<1>();
    for (int i = 0; i < 64; i++) out[64 + i] = s[i];
    ptx::cp_async_wait<0>();
    for (int i = 0; i < 64; i++) out[128 + i] = s[i];
}

__global__ void ldmatrix_misaligned_kernel(uint32_t* out) {
    DYNAMIC_SHARED(uint4, smem);
    uint32_t r[4];
    ptx::ldmatrix_x4(r, reinterpret_cast<uint16_t*>(smem) + threadIdx.x * 8 + 4);
    out[threadIdx.x] = r[0];
}
__global__ void mma_divergent_kernel(float* out) {
    float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    const uint32_t a[4] = {0u, 0u, 0u, 0u};
    if (threadIdx.x != 5) ptx::mma_bf16_16816(acc, a, 0u, 0u);
    out[threadIdx.x] = acc[0];
}
__global__ void cp_async_out_of_bounds_kernel(const float* in) {
    DYNAMIC_SHARED(float4, smem);
    if (threadIdx.x == 0) ptx::cp_async_16(smem, in + 64, true);  // in has 64 floats (256 bytes)
    ptx::cp_async_wait<0>();
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


// bf16 bits of random values, and their f32 values.
std::vector<uint16_t> random_bf16(size_t n, uint64_t seed, std::vector<float>* as_f32) {
    const auto f = testing::random_floats(n, seed);
    std::vector<uint16_t> bits(n);
    as_f32->resize(n);
    for (size_t i = 0; i < n; i++) bits[i] = f32_to_bf16(f[i]), (*as_f32)[i] = bf16_to_f32(bits[i]);
    return bits;
}

TEST(CudaEmu, MmaSyncM16n8k16HasThePtxFragmentLayout) {
    std::vector<float> af, bf;
    const auto a = random_bf16(256, 21, &af), b = random_bf16(128, 22, &bf);
    const auto c = testing::random_floats(128, 23);
    std::vector<double> want(128);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            double acc = c[size_t(i * 8 + j)];
            for (int kk = 0; kk < 16; kk++) acc += double(af[size_t(i * 16 + kk)]) * double(bf[size_t(kk * 8 + j)]);
            want[size_t(i * 8 + j)] = acc;
        }
    for (bool wrong : {false, true}) {
        float* dd = device(std::vector<float>(128, 0.0f));
        launch(mma_layout_kernel, 1, 32, 0, nullptr, dd, device(a), device(b), device(c), wrong);
        ASSERT_EQ(cudaGetLastError(), cudaSuccess);
        const auto d = host(dd, 128);
        double worst = 0.0;
        for (int i = 0; i < 128; i++) worst = std::max(worst, std::fabs(double(d[size_t(i)]) - want[size_t(i)]));
        // Exact products summed in double, one f32 rounding: within an ulp of |d| <= ~8.
        if (!wrong) EXPECT_LT(worst, 1e-6) << "the documented layout";
        else EXPECT_GT(worst, 1e-2) << "a wrong A layout must give wrong numbers";
    }
}

TEST(CudaEmu, LdmatrixHasThePtxFragmentLayout) {
    std::vector<uint16_t> in(256);
    for (int i = 0; i < 256; i++) in[size_t(i)] = uint16_t(i);  // element (row r of 32, col c) = 8 r + c
    uint32_t* outd = device(std::vector<uint32_t>(256, 0u));
    launch(ldmatrix_kernel, 1, 32, 512, nullptr, outd, device(in));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto out = host(outd, 256);
    for (int l = 0; l < 32; l++)
        for (int i = 0; i < 4; i++) {
            const int g = l >> 2, t = l & 3;
            // plain: matrix i, row g, columns 2t, 2t+1
            const uint32_t plain = uint32_t(8 * (8 * i + g) + 2 * t) | (uint32_t(8 * (8 * i + g) + 2 * t + 1) << 16);
            // .trans: matrix i, rows 2t, 2t+1 of column g
            const uint32_t trans = uint32_t(8 * (8 * i + 2 * t) + g) | (uint32_t(8 * (8 * i + 2 * t + 1) + g) << 16);
            EXPECT_EQ(out[size_t(l * 8 + i)], plain) << "lane " << l << " matrix " << i;
            EXPECT_EQ(out[size_t(l * 8 + 4 + i)], trans) << "lane " << l << " matrix " << i << " .trans";
        }
}

TEST(CudaEmu, LdmatrixOperandsFeedMmaAsTheAttentionKernelsLoadThem) {
    std::vector<float> af, btf, bkf;
    const auto a = random_bf16(256, 31, &af), bt = random_bf16(128, 32, &btf), bk = random_bf16(128, 33, &bkf);
    float* dd = device(std::vector<float>(256, 0.0f));
    launch(ldmatrix_mma_kernel, 1, 32, 3 * 512, nullptr, dd, device(a), device(bt), device(bk));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto d = host(dd, 256);
    for (int i = 0; i < 16; i++)
        for (int j = 0; j < 8; j++) {
            double w1 = 0.0, w2 = 0.0;  // A Bt^T and A B
            for (int kk = 0; kk < 16; kk++) {
                w1 += double(af[size_t(i * 16 + kk)]) * double(btf[size_t(j * 16 + kk)]);
                w2 += double(af[size_t(i * 16 + kk)]) * double(bkf[size_t(kk * 8 + j)]);
            }
            EXPECT_NEAR(d[size_t(i * 8 + j)], w1, 1e-6) << i << "," << j;
            EXPECT_NEAR(d[size_t(128 + i * 8 + j)], w2, 1e-6) << i << "," << j << " (.trans)";
        }
}

TEST(CudaEmu, CpAsyncLandsAtWaitGroupAndZeroFills) {
    std::vector<float> in(64);
    for (int i = 0; i < 64; i++) in[size_t(i)] = float(i + 1);
    float* outd = device(std::vector<float>(192, 0.0f));
    launch(cp_async_kernel, 1, 32, 256, nullptr, outd, device(in));
    ASSERT_EQ(cudaGetLastError(), cudaSuccess);
    const auto out = host(outd, 192);
    for (int i = 0; i < 64; i++) {
        EXPECT_EQ(out[size_t(i)], -1.0f) << i << ": nothing lands before a wait";
        EXPECT_EQ(out[size_t(64 + i)], i < 32 ? float(i + 1) : -1.0f) << i << ": wait_group 1 completes group 0 only";
        EXPECT_EQ(out[size_t(128 + i)], i >= 44 && i < 48 ? 0.0f : float(i + 1)) << i << ": src-size 0 zero-fills";
    }
}

TEST_F(CudaEmuDeathTest, MisalignedLdmatrixDivergentMmaAndOutOfBoundsCpAsyncAreReported) {
    GTEST_FLAG_SET(death_test_style, "threadsafe");
    uint32_t* outd = device(std::vector<uint32_t>(32, 0u));
    float* outf = device(std::vector<float>(64, 0.0f));
    EXPECT_DEATH(launch(ldmatrix_misaligned_kernel, 1, 32, 1024, nullptr, outd),
                 "ldmatrix_misaligned_kernel.*ldmatrix: lane 0's row address .* is not 16-byte aligned");
    EXPECT_DEATH(launch(mma_divergent_kernel, 1, 32, 0, nullptr, outf), "DEADLOCK.*mma.sync.m16n8k16");
    EXPECT_DEATH(launch(cp_async_out_of_bounds_kernel, 1, 32, 256, nullptr, outf),
                 "cp.async reads 16 bytes at .*, outside every device allocation");
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
