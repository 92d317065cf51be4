// The CUDA entry points exist in every build. Without CUDA (or before an op has its CUDA
// kernel) they must fail with a clear message naming the op, never crash or compute garbage.
#include <gtest/gtest.h>

#include "backend/kernels.h"
#include "core/error.h"

using namespace tuner;

TEST(CudaStubs, UnavailableOpsSayWhy) {
    if (cuda::available()) GTEST_SKIP() << "a CUDA device is present: the CUDA op tests cover this build";
    float x[4] = {1, 2, 3, 4}, out[4], rstd[1], w[4] = {1, 1, 1, 1};
    try {
        cuda::rmsnorm_forward(out, rstd, x, w, 1, 4, 1e-5f);
        FAIL() << "expected tuner::Error";
    } catch (const Error& e) {
        std::string msg = e.what();
        EXPECT_NE(msg.find("[cuda]"), std::string::npos) << msg;
        EXPECT_NE(msg.find("rmsnorm_forward"), std::string::npos) << msg;
    }
}
