#include "io/atomic_file.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "core/error.h"

namespace fs = std::filesystem;

namespace tuner {

void atomic_write_failed(const char* tag, const std::string& tmp, int err) {
    const char* hint = err == ENOSPC || err == EFBIG ? "; disk full or over the file size limit?" : "";
    fail("[{}] {}: write failed ({}{})", tag, tmp, std::strerror(err), hint);
}

void atomic_file_finish(std::FILE* f, const std::string& tmp, const std::string& path, const char* tag) {
    // Flush and sync before the rename so that a crash never leaves a truncated file at PATH.
    bool ok = std::fflush(f) == 0;
    int err = errno;
    if (ok && fsync(fileno(f)) != 0 && errno != EINVAL && errno != EROFS) {
        ok = false;
        err = errno;
    }
    if (std::fclose(f) != 0 && ok) {
        ok = false;
        err = errno;
    }
    if (!ok) atomic_write_failed(tag, tmp, err);
    if (std::rename(tmp.c_str(), path.c_str()) != 0)
        fail("[{}] {}: cannot rename {} to it ({})", tag, path, tmp, std::strerror(errno));
}

void write_text_atomic(const std::string& path, const std::string& text, const char* tag) {
    const std::string tmp = path + ".tmp";
    std::FILE* f = std::fopen(tmp.c_str(), "wb");
    if (!f) fail("[{}] {}: cannot create ({})", tag, tmp, std::strerror(errno));
    try {
        if (std::fwrite(text.data(), 1, text.size(), f) != text.size()) {
            const int err = errno;
            std::fclose(f);
            atomic_write_failed(tag, tmp, err);
        }
        atomic_file_finish(f, tmp, path, tag);
    } catch (...) {
        std::remove(tmp.c_str());
        throw;
    }
}

TempDir::TempDir(const std::string& out_dir, const char* tag) : out_dir_(out_dir), out_(out_dir), tag_(tag) {
    if (out_.filename().empty()) out_ = out_.parent_path();  // "dir/" -> "dir"
    std::error_code ec;
    if (!out_.parent_path().empty()) fs::create_directories(out_.parent_path(), ec);
    path = out_.string() + ".tmp-" + tag + "-" + std::to_string(getpid());
    fs::remove_all(path, ec);
    if (!fs::create_directories(path, ec) || ec)
        fail("[{}] {}: cannot create a temporary folder ({})", tag, path.string(), ec ? ec.message() : "exists");
}

TempDir::~TempDir() {
    if (committed_) return;
    std::error_code ec;
    fs::remove_all(path, ec);
}

void TempDir::commit() {
    std::error_code ec;
    fs::rename(path, out_, ec);
    if (ec) fail("[{}] {}: cannot rename {} into place ({})", tag_, out_dir_, path.string(), ec.message());
    committed_ = true;
}

}  // namespace tuner
