#include "testing.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <cstdlib>
#include <random>

namespace tuner::testing {

std::string shared_data_dir() {
    const char* env = std::getenv("TUNER_SHARED_DATA");
    std::string dir = env ? env : TUNER_SHARED_DATA;
    struct stat st;
    if (stat((dir + "/INDEX.md").c_str(), &st) != 0) return "";
    return dir;
}

std::string tuner_exe() { return TUNER_EXE; }

std::string make_temp_dir(const std::string& prefix) {
    std::string tmpl = "/tmp/tuner-test-" + prefix + "-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    char* p = mkdtemp(buf.data());
    if (!p) std::abort();
    return std::string(p);
}

int run_command(const std::string& command, std::string* output) {
    std::string cmd = command + " 2>&1";
    FILE* pipe = popen(cmd.c_str(), "r");
    if (!pipe) return -1;
    std::array<char, 4096> buf;
    output->clear();
    size_t n;
    while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) output->append(buf.data(), n);
    int status = pclose(pipe);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

std::vector<float> random_floats(size_t n, uint64_t seed, float scale) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

}  // namespace tuner::testing
