#include "testing.h"

#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <sstream>

#include <fmt/format.h>

#include "backend/cuda/cuda_backend.h"
#include "models/llama.h"
#include "nn/device_copy.h"
#include "tokenizer/tokenizer.h"

namespace tuner::testing {

std::string shared_data_dir() {
    const char* env = std::getenv("TUNER_SHARED_DATA");
    std::string dir = env ? env : TUNER_SHARED_DATA;
    struct stat st;
    if (stat((dir + "/INDEX.md").c_str(), &st) != 0) return "";
    return dir;
}

static std::string env_or(const char* name, const char* compiled) {
    const char* e = std::getenv(name);
    return e && *e ? e : compiled;
}
std::string tuner_exe() { return env_or("TUNER_EXE", TUNER_EXE); }
std::string source_dir() { return env_or("TUNER_SOURCE_DIR", TUNER_SOURCE_DIR); }
std::string binary_dir() { return env_or("TUNER_BINARY_DIR", TUNER_BINARY_DIR); }

Device test_device(std::string* why) {
    if (why) why->clear();
#if !defined(TUNER_CUDA_EMU)
    const char* e = std::getenv("TUNER_TEST_DEVICE");
    if (!e || std::string(e) != "cuda") return Device::CPU;
#endif
    std::string reason;
    if (!cuda::available(&reason)) {
        if (why) *why = "TUNER_TEST_DEVICE=cuda but no CUDA device: " + reason;
        return Device::CPU;
    }
    cuda::Config c = cuda::config();
    c.compute = cuda::MatmulCompute::F32;
    cuda::set_config(c);
    return Device::CUDA;
}

bool cuda_device(std::string* why) { return cuda::available(why); }

bool cuda_device_required() {
    const char* e = std::getenv("TUNER_REQUIRE_CUDA");
    return e && std::string(e) == "1";
}

std::vector<float> host_f32(const Tensor& t) {
    std::vector<uint8_t> scratch;
    const void* p = tensor_to_host(t, scratch);
    std::vector<float> out(size_t(t.numel()));
    convert_to_f32(out.data(), p, t.dtype, out.size());
    return out;
}

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

std::string write_colour_dataset(const std::string& dir, int n, int seed) {
    const char* animals[] = {"cat", "dog", "bird", "fish", "frog", "duck", "bear", "fox"};
    const char* colours[] = {"red", "blue", "green", "yellow", "pink", "brown", "white", "black"};
    std::string path = dir + "/data-" + std::to_string(seed) + ".jsonl";
    std::ofstream f(path);
    for (int i = 0; i < n; i++) {
        int a = (i * 7 + seed) % 8;
        f << "{\"instruction\": \"What colour is the " << animals[a] << "?\", \"input\": \"\", \"output\": \"The "
          << animals[a] << " is " << colours[a] << ".\"}\n";
    }
    return path;
}

std::vector<float> random_floats(size_t n, uint64_t seed, float scale) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> dist(-scale, scale);
    std::vector<float> v(n);
    for (auto& x : v) x = dist(rng);
    return v;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// ---- models -----------------------------------------------------------------------------------

std::vector<float> logits_of(LlamaModel& m, const std::vector<int32_t>& tokens) {
    m.prepare(1, int(tokens.size()), false);
    Batch b;
    b.B = 1;
    b.T = int(tokens.size());
    b.tokens = tokens.data();
    std::vector<float> out(tokens.size() * size_t(m.config.vocab_size));
    m.logits(b, out.data());
    return out;
}

float max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
    EXPECT_EQ(a.size(), b.size());
    float d = 0;
    for (size_t i = 0; i < a.size() && i < b.size(); i++) d = std::max(d, std::fabs(a[i] - b[i]));
    return d;
}

// ---- llama.cpp tokenizer vectors ----------------------------------------------------------------

std::vector<std::string> read_vector_texts(const std::string& data, const std::string& name) {
    std::string inp = read_file(data + "/vectors/ggml-vocab-" + name + ".gguf.inp");
    const std::string sep = "\n__ggml_vocab_test__\n";
    std::vector<std::string> texts;
    size_t pos = 0;
    while (pos < inp.size()) {
        size_t next = inp.find(sep, pos);
        if (next == std::string::npos) {
            texts.push_back(inp.substr(pos));
            break;
        }
        texts.push_back(inp.substr(pos, next - pos));
        pos = next + sep.size();
    }
    return texts;
}

std::vector<TokenizerVector> read_vectors(const std::string& data, const std::string& name) {
    const std::vector<std::string> texts = read_vector_texts(data, name);
    const std::string out = read_file(data + "/vectors/ggml-vocab-" + name + ".gguf.out");
    std::vector<TokenizerVector> v;
    size_t line_start = 0, i = 0;
    while (line_start < out.size() && i < texts.size()) {
        size_t nl = out.find('\n', line_start);
        if (nl == std::string::npos) nl = out.size();
        TokenizerVector x;
        x.text = texts[i++];
        size_t p = line_start;
        while (p < nl) {
            while (p < nl && out[p] == ' ') p++;
            if (p >= nl) break;
            size_t q = p;
            while (q < nl && out[q] != ' ') q++;
            x.ids.push_back(std::stoi(out.substr(p, q - p)));
            p = q;
        }
        v.push_back(std::move(x));
        line_start = nl + 1;
    }
    EXPECT_EQ(v.size(), texts.size()) << name << ": .inp and .out disagree on the number of strings";
    return v;
}

std::string show_ids(const std::vector<int32_t>& ids) {
    std::string s;
    for (int32_t id : ids) s += " " + std::to_string(id);
    return s;
}

std::string escape(const std::string& s) {
    std::string o;
    for (unsigned char ch : s) {
        if (ch == '\n')
            o += "\\n";
        else if (ch == '\t')
            o += "\\t";
        else if (ch < 0x20)
            o += fmt::format("\\x{:02x}", ch);
        else
            o.push_back(char(ch));
    }
    return o;
}

size_t check_vectors(const Tokenizer& tok, const std::vector<TokenizerVector>& vectors, const std::string& label,
                     const std::string& note) {
    size_t ok = 0;
    for (const TokenizerVector& v : vectors) {
        std::vector<int32_t> ids = tok.encode(v.text, false);
        if (ids == v.ids) {
            ok++;
        } else {
            ADD_FAILURE() << label << ": \"" << escape(v.text) << "\"\n  expected:" << show_ids(v.ids)
                          << "\n  got:     " << show_ids(ids);
        }
    }
    std::printf("[ vectors  ] %s: %zu/%zu strings match%s%s\n", label.c_str(), ok, vectors.size(),
                note.empty() ? "" : " ", note.c_str());
    return ok;
}

// ---- PyTorch reference scripts ------------------------------------------------------------------

static bool is_dir(const std::string& path) {
    struct stat st;
    return stat(path.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
}

RefOutput run_ref_script(const std::string& script, const std::vector<std::string>& imports,
                         const std::string& cache_parent, const std::string& tests, const std::string& tag) {
    RefOutput r;
    std::string text = read_file(script);
    if (text.empty()) {
        r.error = "cannot read " + script;
        return r;
    }
    for (const std::string& s : imports) text += read_file(s);
    const std::string cache = fmt::format("{}/{:016x}", cache_parent, std::hash<std::string>{}(text));
    if (is_dir(cache)) {
        r.dir = cache;
        return r;
    }
    const char* env = std::getenv("TUNER_PYTHON");
    std::string python = env && *env ? env : "/usr/bin/python3";
    std::string out;
    if (run_command("test -x " + python, &out) != 0) {
        r.skip = python + " not found: " + tests + " need Python with torch (apt install python3-torch)";
        return r;
    }
    if (run_command(python + " -c 'import torch, numpy'", &out) != 0) {
        r.skip = python + " cannot import torch and numpy (apt install python3-torch python3-numpy): " + out;
        return r;
    }
    // Generate beside the cache (same file system), then rename(2), which is atomic.
    mkdir(cache_parent.c_str(), 0755);
    std::string tmpl = cache_parent + "/tmp-XXXXXX";
    std::vector<char> buf(tmpl.begin(), tmpl.end());
    buf.push_back('\0');
    if (!mkdtemp(buf.data())) {
        r.error = "cannot create a folder in " + cache_parent;
        return r;
    }
    std::string tmp = buf.data();
    std::string cmd = python + " " + script + " --out " + tmp;
    if (run_command(cmd, &out) != 0) {
        r.error = "`" + cmd + "` failed:\n" + out;
        return r;
    }
    std::printf("[%s] %s\n%s", tag.c_str(), cmd.c_str(), out.c_str());
    if (std::rename(tmp.c_str(), cache.c_str()) == 0) {
        r.dir = cache;
    } else {
        r.dir = is_dir(cache) ? cache : tmp;  // another process won the race
        if (r.dir == cache) run_command("rm -rf " + tmp, &out);
    }
    return r;
}

}  // namespace tuner::testing
