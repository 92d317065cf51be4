// libFuzzer target for the dataset readers (JSON lines, .json lists, plain text) and the record
// conversion of every format.
//
// Input: one byte of options, one byte of mappings, then the file's bytes.
//   options bits 0-1: file kind (0, 3 JSON lines; 1 .json list; 2 plain text)
//           bits 2-4: format (0 auto, 1 alpaca, 2 openai, 3 sharegpt, 4 text, else auto)
//           bit 5: on_error skip; bits 6-7: plain-text split (file, paragraph, line, file)
//   mappings bit 0: rename columns (instruction->i, output->o, messages->m, conversations->c,
//           text->t, role->r, content->x); bit 1: map the role "bot" to assistant; bit 2: a
//           default system text.
// Reading either succeeds, and then every record is well formed (a line inside the file, valid
// UTF-8 everywhere, text or turns but not both), or it stops with a tuner::Error. Anything else
// (a crash, a sanitizer report, another exception, a broken invariant) is a finding.
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "core/error.h"
#include "data/readers.h"

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

void check_text(const std::string& s) { check(tuner::find_invalid_utf8(s) == std::string_view::npos); }

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* bytes, size_t size) {
    if (size < 2) return -1;
    const uint8_t options = bytes[0], mappings = bytes[1];
    std::string_view text(reinterpret_cast<const char*>(bytes + 2), size - 2);

    static const tuner::FileKind kinds[4] = {tuner::FileKind::JsonLines, tuner::FileKind::JsonList,
                                             tuner::FileKind::PlainText, tuner::FileKind::JsonLines};
    static const tuner::DataFormat formats[8] = {tuner::DataFormat::Auto,   tuner::DataFormat::Alpaca,
                                                 tuner::DataFormat::OpenAI, tuner::DataFormat::ShareGPT,
                                                 tuner::DataFormat::Text,   tuner::DataFormat::Auto,
                                                 tuner::DataFormat::Auto,   tuner::DataFormat::Auto};
    static const tuner::TextSplit splits[4] = {tuner::TextSplit::File, tuner::TextSplit::Paragraph,
                                               tuner::TextSplit::Line, tuner::TextSplit::File};
    tuner::FileKind kind = kinds[options & 3];
    tuner::DataSource src;
    src.format = formats[(options >> 2) & 7];
    src.split = splits[(options >> 6) & 3];
    if (kind == tuner::FileKind::PlainText && src.format != tuner::DataFormat::Auto &&
        src.format != tuner::DataFormat::Text)
        src.format = tuner::DataFormat::Text;  // any other format is a configuration error, not data
    if (mappings & 1)
        src.columns = {{"instruction", "i"}, {"output", "o"}, {"messages", "m"}, {"conversations", "c"},
                       {"text", "t"},        {"role", "r"},   {"content", "x"}};
    if (mappings & 2) src.roles = {{"bot", "assistant"}};
    tuner::ReaderOptions opts;
    opts.skip_bad = (options >> 5) & 1;
    if (mappings & 4) opts.default_system = "sys";

    tuner::ReadResult rr;
    try {
        tuner::read_buffer(text, kind, "fuzz.jsonl", src, 0, opts, &rr);
    } catch (const tuner::Error& e) {
        // Rejected input: the message names the file.
        check(std::string_view(e.what()).find("fuzz.jsonl") != std::string_view::npos);
        return 0;
    }
    int64_t lines = 1 + std::count(text.begin(), text.end(), '\n');
    check(rr.files.size() == 1 && rr.file_formats.size() == 1);
    for (const auto& r : rr.records) {
        check(r.file == 0 && r.source == 0);
        check(r.line >= 1 && r.line <= lines);
        if (r.is_text) {
            check(r.turns.empty());
            check_text(r.text);
        } else {
            check(r.text.empty());
            for (const auto& t : r.turns) {
                check_text(t.system);
                check_text(t.input);
                check_text(t.output);
            }
        }
    }
    check(rr.bad_messages.size() == size_t(std::min<int64_t>(rr.bad, 5)));
    check(opts.skip_bad || rr.bad == 0);
    for (const auto& m : rr.bad_messages) check(m.rfind("fuzz.jsonl", 0) == 0);
    return 0;
}
