// Dataset readers: .json (a list of records), .jsonl (one record per line) and plain text
// (.txt, .md) into conversations (a list of turns) or texts. docs/data.md describes the formats.
//
// Every record becomes either a conversation, as the reference system models it:
//   turns = [{system?, input, output, train}], each turn a user input and the assistant's answer,
// or a text record (continued pre-training). Formats:
//   alpaca   {instruction, input?, output, system?, history?: [[q, a], ...]}
//            input of the turn = instruction + "\n" + input (when input is non-empty)
//   openai   {messages: [{role, content, loss?}], tools?}  roles system/user/assistant/tool
//   sharegpt {conversations: [{from, value}], system?, tools?}  from system/human/gpt (also
//            user/assistant), function_call (an assistant turn) and observation (a user-side turn)
//   text     {text} or whole plain-text files
// Messages to turns: leading assistant messages are dropped; consecutive user-side messages are
// joined with "\n"; each assistant message closes a turn; a trailing user message has no answer
// and is dropped. A system message applies to the next turn.
//
// Bad input ("file:line: what") stops reading with a tuner::Error, or with skip_bad is counted and
// skipped: malformed JSON, a missing field, a wrong type, invalid UTF-8 (with its byte offset).
// A broken list structure in a .json file (an unclosed bracket) cannot be skipped past: it stops.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/dataset_config.h"

namespace tuner {

struct Turn {
    std::string system;  // rendered with the template's SYSTEM block when non-empty
    std::string input;   // the user side (may be empty)
    std::string output;  // the assistant's answer
    bool train = true;   // train on the output and its end token
};

struct Record {
    std::vector<Turn> turns;  // chat records
    std::string text;         // text records
    bool is_text = false;
    int32_t source = 0;  // index of its DataSource
    int32_t file = 0;    // index into ReadResult::files
    int64_t line = 0;    // 1-based line where the record starts
};

struct ReadResult {
    std::vector<Record> records;
    std::vector<std::string> files;           // every file read, for messages
    std::vector<DataFormat> file_formats;     // the format used for each file
    int64_t bad = 0;                          // bad records skipped (skip_bad)
    std::vector<std::string> bad_messages;    // the first few reasons, "file:line: what"
};

struct ReaderOptions {
    bool skip_bad = false;
    std::string default_system;   // for records without a system text (a source's own `system` wins)
    std::string config_dir;       // relative source paths are also tried from here
};

enum class FileKind { JsonList, JsonLines, PlainText };

// Finds the files of a source (a file, or a folder of .json/.jsonl/.txt/.md files) and reads them.
void read_source(const DataSource& src, int32_t source_index, const ReaderOptions& opts, ReadResult* out);

// Reads the contents of one file. `name` is used in messages; the kind says how to split records.
// Used by read_source and by the fuzz target.
void read_buffer(std::string_view bytes, FileKind kind, const std::string& name, const DataSource& src,
                 int32_t source_index, const ReaderOptions& opts, ReadResult* out);

// The file kind for a path's extension; throws for unknown extensions.
FileKind file_kind_for(const std::string& path);

// The format a JSON record looks like (Auto when it matches none).
DataFormat detect_format(const nlohmann::json& j, const DataSource& src);
// Converts one parsed record. Throws tuner::Error with the reason only (no location): the caller
// adds "file:line: ".
void record_from_json(const nlohmann::json& j, DataFormat format, const DataSource& src, const ReaderOptions& opts,
                      Record* out);

// Byte offset of the first invalid UTF-8 sequence (overlong forms, surrogates and code points past
// U+10FFFF are invalid), or std::string_view::npos when valid.
size_t find_invalid_utf8(std::string_view s);

}  // namespace tuner
