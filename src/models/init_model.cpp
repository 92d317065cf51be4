#include "models/init_model.h"

#include <filesystem>
#include <vector>

#include "io/atomic_file.h"
#include "io/safetensors.h"
#include "io/tokenizer_files.h"
#include "models/llama_tensors.h"
#include "tokenizer/byte_tokenizer_files.h"

namespace tuner {

namespace fs = std::filesystem;

void init_model(ModelConfig config, const std::string& out_dir, const InitModelOptions& options) {
    if (options.dtype != DType::F32 && options.dtype != DType::BF16 && options.dtype != DType::F16)
        fail("[init-model] --dtype must be f32, bf16 or f16");
    fs::create_directories(out_dir);
    if (options.config_only && fs::exists(fs::path(out_dir) / "model.safetensors"))
        fail("[init-model] {}: holds a model.safetensors; --config-only would leave it beside a config that may "
             "not match (choose a new folder)",
             out_dir);
    if (options.tokenizer_dir == "bytes") {
        // The project's own byte-level tokenizer (no files needed from anywhere).
        write_byte_tokenizer(out_dir);
        config.vocab_size = kByteTokenizerVocab;
        config.bos_token_id = 256;
        config.eos_token_id = 257;
    } else if (!options.tokenizer_dir.empty()) {
        TokenizerFilesInfo tok = read_tokenizer_files_info(options.tokenizer_dir);
        config.vocab_size = tok.vocab_size;
        if (tok.bos_token_id >= 0) config.bos_token_id = tok.bos_token_id;
        if (tok.eos_token_id >= 0) config.eos_token_id = tok.eos_token_id;
        for (const auto& name : tok.files)
            fs::copy_file(fs::path(options.tokenizer_dir) / name, fs::path(out_dir) / name,
                          fs::copy_options::overwrite_existing);
    }
    config.torch_dtype = dtype_torch_name(options.dtype);
    if (options.config_only) {
        write_text_atomic((fs::path(out_dir) / "config.json").string(), config_to_json(config).dump(2) + "\n",
                          "init-model");
        return;
    }

    const auto specs = llama_tensor_specs(config);
    SafetensorsWriter writer((fs::path(out_dir) / "model.safetensors").string());
    size_t largest = 0;
    for (const auto& s : specs) {
        writer.declare(s.name, options.dtype, s.shape);
        largest = std::max(largest, spec_numel(s));
    }
    // One f32 buffer and one output buffer of the largest tensor: peak memory of a 7B bf16 model
    // is about 0.8 GB (the 32000 x 4096 embedding), not 13 GB.
    std::vector<float> buf(largest);
    std::vector<uint8_t> out(largest * dtype_size(options.dtype));
    for (const auto& s : specs) {
        size_t n = spec_numel(s);
        llama_init_values(s, buf.data(), options.seed);
        if (options.dtype == DType::F32) {
            writer.write(s.name, buf.data());
        } else {
            convert_from_f32(out.data(), options.dtype, buf.data(), n);
            writer.write(s.name, out.data());
        }
    }
    writer.finish();
    write_text_atomic((fs::path(out_dir) / "config.json").string(), config_to_json(config).dump(2) + "\n", "init-model");
}

}  // namespace tuner
