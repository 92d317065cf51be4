// tuner logits MODEL [--adapter DIR] (--ids 1,2,3 | --text "...") --out FILE.npy [--device cpu|cuda]
// The logits (T, V) of every position of one sequence, written as a NumPy .npy file (format 1.0,
// '<f4', C order) for comparisons with other implementations (tests/ref/hf_check.py loads the
// same model in transformers + PEFT and compares). Prints the shape and a short summary; with
// --text also the token ids, so another program can feed the same ids.
//
//   tuner logits models/x --adapter runs/y/adapter --ids 1,450,4799 --out logits.npy
//   python3 -c "import numpy; print(numpy.load('logits.npy').shape)"      # (3, V)
//
// --device cuda runs the model on the GPU (ModelOptions::device; weights copied there after
// loading) and copies the logits back; without a device it fails with the CUDA runtime's reason.
// Exit code 1 (after writing the file) when any logit is not finite, so scripts notice.
#include <algorithm>
#include <bit>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "backend/kernels.h"
#include "cli/commands.h"
#include "cli/device_option.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/samples.h"
#include "io/atomic_file.h"
#include "io/peft.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"

namespace tuner::cli {

namespace {

// "1,2,3" (commas and/or blanks between ids), each id checked against the vocabulary.
std::vector<int32_t> parse_id_list(const std::string& text, int64_t vocab_size) {
    std::vector<int32_t> ids;
    size_t i = 0;
    while (i < text.size()) {
        while (i < text.size() && (text[i] == ',' || std::isspace(static_cast<unsigned char>(text[i])))) i++;
        if (i >= text.size()) break;
        size_t j = i;
        while (j < text.size() && text[j] != ',' && !std::isspace(static_cast<unsigned char>(text[j]))) j++;
        const std::string word = text.substr(i, j - i);
        char* end = nullptr;
        errno = 0;
        const long long v = std::strtoll(word.c_str(), &end, 10);
        if (*end != '\0' || errno != 0)
            fail("[logits] --ids: token {} ('{}') is not an integer (expected e.g. --ids 1,450,4799)", ids.size() + 1,
                 word);
        if (v < 0 || v >= vocab_size)
            fail("[logits] --ids: token {} is id {}, outside the model's vocabulary [0, {})", ids.size() + 1, v,
                 vocab_size);
        ids.push_back(int32_t(v));
        i = j;
    }
    if (ids.empty()) fail("[logits] --ids: no token ids in '{}'", text);
    return ids;
}

// NumPy format 1.0 (numpy/lib/format.py): magic "\x93NUMPY", version 1.0, a little-endian uint16
// header length, then a Python dict literal padded with spaces and ended by '\n' so that the data
// starts at a multiple of 64 bytes; then the float32 values in C order.
void write_npy_f32(const std::string& path, const float* data, int64_t rows, int64_t cols) {
    static_assert(std::endian::native == std::endian::little, "the .npy writer assumes a little-endian host ('<f4')");
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + std::to_string(rows) + ", " +
                       std::to_string(cols) + "), }";
    const size_t prefix = 6 + 2 + 2;  // magic, version, header length
    size_t header = dict.size() + 1;  // + '\n'
    header += (64 - (prefix + header) % 64) % 64;
    dict.append(header - 1 - dict.size(), ' ');
    dict += '\n';
    std::string head = "\x93NUMPY";
    head += char(1);
    head += char(0);
    head += char(header & 0xff);
    head += char((header >> 8) & 0xff);
    head += dict;

    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail("[logits] {}: cannot create ({})", tmp, std::strerror(errno));
    const size_t n = size_t(rows) * size_t(cols);
    if (std::fwrite(head.data(), 1, head.size(), f) != head.size() || std::fwrite(data, sizeof(float), n, f) != n) {
        const int err = errno;
        std::fclose(f);
        std::remove(tmp.c_str());
        atomic_write_failed("logits", tmp, err);
    }
    atomic_file_finish(f, tmp, path, "logits");
}

}  // namespace

Command add_logits(CLI::App& app) {
    struct Opts {
        std::string model, adapter, ids, text, out, device = "cpu";
        int threads = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("logits", "write the logits (T, V) of every position of one sequence as .npy");
    sub->add_option("model", o->model, "Hugging Face model folder (or .gguf)")->required();
    sub->add_option("--adapter", o->adapter, "a PEFT LoRA adapter folder to apply");
    auto* ids_opt = sub->add_option("--ids", o->ids, "token ids, comma-separated: 1,450,4799");
    auto* text_opt = sub->add_option("--text", o->text, "a text, tokenized with BOS when the tokenizer adds one");
    ids_opt->excludes(text_opt);
    sub->add_option("--out", o->out, "output .npy file (float32, shape (T, V))")->required();
    add_device_option(sub, &o->device);
    add_threads_option(sub, &o->threads);
    return {sub, [o]() {
                set_num_threads(o->threads);
                if (o->ids.empty() == o->text.empty()) fail("[logits] give --ids 1,2,3 or --text \"...\"");
                const Device device = resolve_device(o->device, "logits");
                if (!std::filesystem::exists(o->model))
                    fail("[logits] {}: no such model folder or file", o->model);
                // The base stored as the adapter was trained against it, then the adapter's values.
                auto model = load_model_with_adapter(o->model, o->adapter, device);
                const int64_t V = model->config.vocab_size;
                std::vector<int32_t> ids;
                if (!o->ids.empty()) {
                    ids = parse_id_list(o->ids, V);
                } else {
                    auto tok = Tokenizer::load(o->model);
                    EncodeOptions enc = encode_options_for(*tok, -1);
                    if (enc.text_bos && enc.bos_id >= 0) ids.push_back(enc.bos_id);
                    auto body = tok->encode(o->text, false);
                    ids.insert(ids.end(), body.begin(), body.end());
                    if (ids.empty()) fail("[logits] --text: the text has no tokens");
                    for (int32_t id : ids)
                        if (id < 0 || id >= V)
                            fail("[logits] --text: the tokenizer gave id {}, outside the model's vocabulary [0, {})",
                                 id, V);
                }
                const int T = int(ids.size());
                model->prepare(1, T, false);
                Batch b;
                b.B = 1;
                b.T = T;
                b.tokens = ids.data();
                std::vector<float> logits(size_t(T) * size_t(V));
                model->logits(b, logits.data());
                write_npy_f32(o->out, logits.data(), T, V);

                // Summary: range, non-finite count, and the argmax of the first and last positions.
                size_t bad = 0;
                float lo = INFINITY, hi = -INFINITY;
                double sum = 0;
                for (float x : logits) {
                    if (!std::isfinite(x)) { bad++; continue; }
                    lo = std::min(lo, x), hi = std::max(hi, x), sum += x;
                }
                auto argmax = [&](int t) {
                    const float* row = logits.data() + size_t(t) * size_t(V);
                    return int64_t(std::max_element(row, row + V) - row);
                };
                std::printf("logits (%d, %lld) float32 -> %s\n", T, (long long)V, o->out.c_str());
                if (!o->text.empty()) {
                    std::string s;
                    for (size_t i = 0; i < ids.size(); i++) s += (i ? "," : "") + std::to_string(ids[i]);
                    std::printf("ids %s\n", s.c_str());
                }
                std::printf("model %s%s%s, device %s\n", o->model.c_str(), o->adapter.empty() ? "" : " + adapter ",
                            o->adapter.c_str(), o->device.c_str());
                std::printf("min %.4f  max %.4f  mean %.4f  argmax[0] %lld  argmax[%d] %lld\n", lo, hi,
                            sum / double(logits.size() - bad > 0 ? logits.size() - bad : 1), (long long)argmax(0),
                            T - 1, (long long)argmax(T - 1));
                if (bad) {
                    std::fprintf(stderr, "error: [logits] %zu of %zu logits are not finite (NaN or inf); written anyway\n",
                                 bad, logits.size());
                    return 1;
                }
                return 0;
            }};
}

}  // namespace tuner::cli
