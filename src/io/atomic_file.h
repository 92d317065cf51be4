// Writing a file so that PATH holds either its previous content or the complete new one, never a
// truncated file: the bytes go to PATH.tmp, which is flushed, fsync'ed, closed and then renamed
// over PATH (rename(2) is atomic within a file system).
//
// Errors are tuner::Error messages that start with the caller's tag and name the file:
//   [TAG] PATH.tmp: cannot create (No such file or directory)
//   [TAG] PATH.tmp: write failed (File too large; disk full or over the file size limit?)
//   [TAG] PATH: cannot rename PATH.tmp to it (Permission denied)
//
// Usage, a whole text:
//   write_text_atomic(dir + "/config.json", j.dump(2) + "\n", "peft");
// or streaming (what SafetensorsWriter and GgufWriter do):
//   FILE* f = std::fopen((path + ".tmp").c_str(), "wb");   // "cannot create" if null
//   ... fwrite, atomic_write_failed(tag, tmp, errno) when one fails ...
//   atomic_file_finish(f, path + ".tmp", path, "gguf");
#pragma once

#include <cstdio>
#include <filesystem>
#include <string>

namespace tuner {

// Throws "[TAG] TMP: write failed (strerror(err))", with a hint when err is ENOSPC or EFBIG.
[[noreturn]] void atomic_write_failed(const char* tag, const std::string& tmp, int err);

// Flushes, fsyncs and closes `f` (open on TMP for writing; closed in every case), then renames TMP
// to PATH. A file system without fsync (EINVAL, EROFS: a pipe, /dev/full) is not an error.
// TMP is left in place when this throws (the writers remove it when they are destroyed unfinished).
void atomic_file_finish(std::FILE* f, const std::string& tmp, const std::string& path, const char* tag);

// Writes `text` to PATH through PATH.tmp as above; PATH.tmp is removed when this throws.
void write_text_atomic(const std::string& path, const std::string& text, const char* tag);

// A folder written as a whole (a merged model, an exported HF folder) goes to a temporary sibling
// OUT.tmp-TAG-PID that is renamed into place at the end; destroyed before that (an exception), it
// removes the temporary folder, so a failure leaves nothing half-written behind.
//   TempDir tmp(out_dir, "merge");        // "[merge] ...: cannot create a temporary folder (...)"
//   write_text_atomic((tmp.path / "config.json").string(), text, "merge");
//   tmp.commit();                         // rename(2) replaces an empty OUT_DIR
class TempDir {
  public:
    TempDir(const std::string& out_dir, const char* tag);
    ~TempDir();
    TempDir(const TempDir&) = delete;
    TempDir& operator=(const TempDir&) = delete;
    // Renames the folder to OUT_DIR: "[TAG] OUT_DIR: cannot rename TMP into place (...)".
    void commit();

    std::filesystem::path path;  // the temporary folder

  private:
    std::string out_dir_;
    std::filesystem::path out_;
    const char* tag_;
    bool committed_ = false;
};

}  // namespace tuner
