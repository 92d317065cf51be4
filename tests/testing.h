// Helpers shared by the tests.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "core/error.h"

namespace tuner::testing {

// ../shared/data beside the checkout, or "" when it is absent (the test should GTEST_SKIP).
std::string shared_data_dir();
// Path to the built `tuner` program.
std::string tuner_exe();
// A fresh empty temporary directory (removed by the OS's tmp cleaning, not by the test).
std::string make_temp_dir(const std::string& prefix);
// Runs a shell command, returns its exit status and captures stdout+stderr into *output.
int run_command(const std::string& command, std::string* output);
// Deterministic pseudo-random floats in [-scale, scale).
std::vector<float> random_floats(size_t n, uint64_t seed, float scale = 1.0f);

// Runs f, which must throw tuner::Error, and returns the message ("" and a test failure if
// it does not throw).
template <typename F>
std::string error_of(F&& f) {
    try {
        f();
    } catch (const ::tuner::Error& e) {
        return e.what();
    }
    ADD_FAILURE() << "expected a tuner::Error";
    return "";
}

}  // namespace tuner::testing

#define EXPECT_CONTAINS(haystack, needle)                                                         \
    EXPECT_NE(std::string(haystack).find(needle), std::string::npos)                             \
        << "message: " << (haystack) << "\n  should contain: " << (needle)

#define TUNER_REQUIRE_SHARED_DATA(dir_var)                                                      \
    std::string dir_var = ::tuner::testing::shared_data_dir();                                  \
    if (dir_var.empty()) GTEST_SKIP() << "../shared/data is not beside this checkout; skipping"
