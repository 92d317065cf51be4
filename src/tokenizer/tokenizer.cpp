// Tokenizer::load: picks the implementation from the path (a folder, tokenizer.json,
// tokenizer.model or a .gguf model) and reads tokenizer_config.json beside it for the special tokens.
#include <filesystem>

#include "core/error.h"
#include "tokenizer/internal.h"

namespace tuner {

namespace fs = std::filesystem;

std::unique_ptr<Tokenizer> Tokenizer::load(const std::string& path) {
    std::error_code ec;
    fs::path p(path);
    if (fs::is_directory(p, ec)) {
        TokenizerConfig config = read_tokenizer_config(path);
        if (fs::is_regular_file(p / "tokenizer.json", ec)) {
            std::string file = (p / "tokenizer.json").string();
            return load_hf_tokenizer(read_file_bytes(file), file, config);
        }
        if (fs::is_regular_file(p / "tokenizer.model", ec))
            return load_sp_tokenizer((p / "tokenizer.model").string(), config);
        fail("[tokenizer] {}: no tokenizer.json or tokenizer.model in this folder", path);
    }
    if (!fs::exists(p, ec)) fail("[tokenizer] {}: no such file or folder", path);
    if (p.extension() == ".gguf") return load_gguf_tokenizer(path);  // the vocabulary inside a GGUF model
    TokenizerConfig config = read_tokenizer_config(p.parent_path().string());
    std::string bytes = read_file_bytes(path);
    // tokenizer.json is JSON (starts with '{'); a SentencePiece model is a binary protobuf.
    size_t first = bytes.find_first_not_of(" \t\r\n");
    bool json = p.extension() == ".json" || (p.extension() != ".model" && first != std::string::npos && bytes[first] == '{');
    if (json) return load_hf_tokenizer(bytes, path, config);
    return load_sp_tokenizer(path, config);
}

}  // namespace tuner
