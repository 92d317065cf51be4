#include "train/checkpoint.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "models/llama.h"
#include "nn/device_copy.h"
#include "train/adamw.h"

namespace tuner {

namespace fs = std::filesystem;
using nlohmann::json;

std::string params_fingerprint(const std::vector<Param*>& params) {
    std::string s;
    for (const Param* p : params) s += p->name + p->value.shape_str() + ";";
    return s;
}

std::string save_checkpoint(const std::string& output_dir, int64_t step, const std::vector<Param*>& params,
                            const AdamW& optimizer, json state, const std::string& config_text) {
    const fs::path final_dir = fs::path(output_dir) / ("checkpoint-" + std::to_string(step));
    fs::path tmp_dir = final_dir;
    tmp_dir += ".tmp";
    std::error_code ec;
    fs::remove_all(tmp_dir, ec);
    try {
        fs::create_directories(tmp_dir);
        {
            SafetensorsWriter w((tmp_dir / "trainable.safetensors").string(), {{"format", "pt"}});
            for (const Param* p : params) w.declare(p->name, DType::F32, p->value.dims());
            std::vector<uint8_t> scratch;  // host copies of parameters on the GPU
            for (const Param* p : params) w.write(p->name, tensor_to_host(p->value, scratch));
            w.finish();
        }
        {
            auto& opt = const_cast<AdamW&>(optimizer);
            SafetensorsWriter w((tmp_dir / "optimizer.safetensors").string(), {{"format", "pt"}});
            for (const Param* p : params) {
                w.declare("exp_avg." + p->name, DType::F32, p->value.dims());
                w.declare("exp_avg_sq." + p->name, DType::F32, p->value.dims());
            }
            std::vector<uint8_t> scratch;
            for (size_t i = 0; i < params.size(); i++) {
                w.write("exp_avg." + params[i]->name, tensor_to_host(opt.exp_avg_tensor(i), scratch));
                w.write("exp_avg_sq." + params[i]->name, tensor_to_host(opt.exp_avg_sq_tensor(i), scratch));
            }
            w.finish();
        }
        state["step"] = step;
        state["optimizer_steps"] = optimizer.steps_taken();
        state["fingerprint"] = params_fingerprint(params);
        write_text_atomic((tmp_dir / "trainer_state.json").string(), state.dump(2) + "\n", "checkpoint");
        write_text_atomic((tmp_dir / "config.yaml").string(), config_text, "checkpoint");
    } catch (const Error& e) {
        fs::remove_all(tmp_dir, ec);  // nothing half-written stays behind; older checkpoints are untouched
        fail("[checkpoint] {}: not saved, earlier checkpoints are untouched: {}", final_dir.string(), e.what());
    } catch (const fs::filesystem_error& e) {
        fs::remove_all(tmp_dir, ec);
        fail("[checkpoint] {}: not saved, earlier checkpoints are untouched: {}", final_dir.string(), e.what());
    }
    fs::remove_all(final_dir, ec);
    fs::rename(tmp_dir, final_dir);
    return final_dir.string();
}

json load_checkpoint(const std::string& dir, const std::vector<Param*>& params, AdamW& optimizer) {
    const fs::path d(dir);
    const fs::path state_path = d / "trainer_state.json";
    std::ifstream f(state_path);
    if (!f) fail("[resume] {}: not a checkpoint (no trainer_state.json)", dir);
    json state;
    try {
        state = json::parse(f);
    } catch (const json::parse_error& e) {
        fail("[resume] {}: invalid JSON: {}", state_path.string(), e.what());
    }
    if (!state.contains("fingerprint") || state["fingerprint"] != params_fingerprint(params))
        fail("[resume] {}: this checkpoint was written for different trained tensors (another model, method or "
             "LoRA settings)",
             dir);
    SafetensorsFile weights((d / "trainable.safetensors").string());
    SafetensorsFile moments((d / "optimizer.safetensors").string());
    auto copy = [&](const SafetensorsFile& file, const std::string& name, const Tensor& dst) {
        const SafetensorsTensor* t = file.find(name);
        if (!t) fail("[resume] {}: tensor '{}' is missing", file.path(), name);
        if (t->dtype != DType::F32 || t->shape != dst.dims() || t->nbytes != dst.nbytes())
            fail("[resume] {}: tensor '{}' has the wrong shape or dtype", file.path(), name);
        tensor_from_host(dst, t->data);
    };
    for (size_t i = 0; i < params.size(); i++) {
        copy(weights, params[i]->name, params[i]->value);
        copy(moments, "exp_avg." + params[i]->name, optimizer.exp_avg_tensor(i));
        copy(moments, "exp_avg_sq." + params[i]->name, optimizer.exp_avg_sq_tensor(i));
    }
    optimizer.set_steps_taken(state.value("optimizer_steps", int64_t(0)));
    return state;
}

std::vector<std::string> list_checkpoints(const std::string& output_dir) {
    std::vector<std::pair<int64_t, std::string>> found;
    std::error_code ec;
    if (!fs::is_directory(output_dir, ec)) return {};
    for (const auto& e : fs::directory_iterator(output_dir, ec)) {
        std::string name = e.path().filename().string();
        if (!e.is_directory() || name.rfind("checkpoint-", 0) != 0) continue;
        std::string num = name.substr(11);
        if (num.empty() || !std::all_of(num.begin(), num.end(), ::isdigit)) continue;  // skips *.tmp
        found.emplace_back(std::stoll(num), e.path().string());
    }
    std::sort(found.begin(), found.end());
    std::vector<std::string> out;
    for (auto& [step, path] : found) out.push_back(path);
    return out;
}

void prune_checkpoints(const std::string& output_dir, int keep) {
    if (keep <= 0) return;
    auto all = list_checkpoints(output_dir);
    for (size_t i = 0; i + size_t(keep) < all.size(); i++) fs::remove_all(all[i]);
}

}  // namespace tuner
