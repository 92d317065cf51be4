// Dataset readers: each format into turns, column and role mappings, and every kind of bad input
// giving its one-line "file:line: what" message (or being skipped and counted).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "data/readers.h"
#include "testing.h"

using namespace tuner;

namespace {

ReadResult read(const std::string& text, FileKind kind, DataSource src = {}, bool skip = false) {
    ReadResult rr;
    ReaderOptions o;
    o.skip_bad = skip;
    read_buffer(text, kind, "d.json", src, 0, o, &rr);
    return rr;
}

DataSource fmt_source(DataFormat f) {
    DataSource s;
    s.format = f;
    return s;
}

// The message of the Error that reading throws ("" when none).
std::string error_of(const std::string& text, FileKind kind, DataSource src = {}) {
    try {
        read(text, kind, src);
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

void expect_error(const std::string& text, FileKind kind, const std::vector<std::string>& needles, DataSource src = {}) {
    std::string m = error_of(text, kind, src);
    ASSERT_FALSE(m.empty()) << "no error for: " << text;
    EXPECT_EQ(m.find('\n'), std::string::npos) << "not one line: " << m;
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
}

}  // namespace

TEST(DataReaders, Alpaca) {
    auto rr = read(R"([
  {"instruction": "Add", "input": "1 2", "output": "3"},
  {"instruction": "Hi", "input": "", "output": "Hello", "system": "Be nice"},
  {"instruction": "Q2", "output": "A2", "history": [["Q0", "A0"], ["Q1", "A1"]]}
])",
                   FileKind::JsonList);
    ASSERT_EQ(rr.records.size(), 3u);
    EXPECT_EQ(rr.file_formats[0], DataFormat::Alpaca);
    const Record& a = rr.records[0];
    ASSERT_EQ(a.turns.size(), 1u);
    EXPECT_EQ(a.turns[0].input, "Add\n1 2");
    EXPECT_EQ(a.turns[0].output, "3");
    EXPECT_EQ(a.line, 2);
    EXPECT_EQ(rr.records[1].turns[0].input, "Hi");
    EXPECT_EQ(rr.records[1].turns[0].system, "Be nice");
    EXPECT_EQ(rr.records[1].line, 3);
    const Record& h = rr.records[2];
    ASSERT_EQ(h.turns.size(), 3u);
    EXPECT_EQ(h.turns[0].input, "Q0");
    EXPECT_EQ(h.turns[1].output, "A1");
    EXPECT_EQ(h.turns[2].input, "Q2");
}

TEST(DataReaders, OpenAIMessages) {
    auto rr = read(
        R"({"messages": [{"role": "assistant", "content": "skipped"}, {"role": "system", "content": "S"}, {"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "assistant", "content": "c", "loss": false}, {"role": "user", "content": [{"type": "text", "text": "d"}]}, {"role": "assistant", "content": "e"}, {"role": "user", "content": "dangling"}]}
{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y", "loss": "False"}]}
)",
        FileKind::JsonLines);
    ASSERT_EQ(rr.records.size(), 2u);
    const Record& r = rr.records[0];
    ASSERT_EQ(r.turns.size(), 2u);
    EXPECT_EQ(r.turns[0].system, "S");
    EXPECT_EQ(r.turns[0].input, "a\nb");  // consecutive user messages joined
    EXPECT_EQ(r.turns[0].output, "c");
    EXPECT_FALSE(r.turns[0].train);
    EXPECT_EQ(r.turns[1].system, "");
    EXPECT_EQ(r.turns[1].input, "d");
    EXPECT_TRUE(r.turns[1].train);
    EXPECT_FALSE(rr.records[1].turns[0].train);
    EXPECT_EQ(rr.records[1].line, 2);
}

TEST(DataReaders, ShareGPTWithTools) {
    auto rr = read(R"([{"conversations": [
  {"from": "human", "value": "cook?"},
  {"from": "function_call", "value": "{\"name\": \"f\"}"},
  {"from": "observation", "value": "{\"r\": 1}"},
  {"from": "gpt", "value": "done"}], "system": "sys", "tools": "[{\"name\": \"f\"}]"}])",
                   FileKind::JsonList);
    ASSERT_EQ(rr.records.size(), 1u);
    const Record& r = rr.records[0];
    ASSERT_EQ(r.turns.size(), 2u);
    EXPECT_EQ(r.turns[0].system, "sys\n\nYou have access to the following tools:\n[{\"name\": \"f\"}]");
    EXPECT_EQ(r.turns[0].input, "cook?");
    EXPECT_EQ(r.turns[0].output, "{\"name\": \"f\"}");  // the call is trained
    EXPECT_EQ(r.turns[1].input, "{\"r\": 1}");          // the tool's answer is input
    EXPECT_EQ(r.turns[1].output, "done");
}

TEST(DataReaders, ColumnsAndRoles) {
    DataSource src = fmt_source(DataFormat::ShareGPT);
    src.columns = {{"conversations", "dialog"}, {"from", "speaker"}, {"value", "text"}};
    src.roles = {{"bot", "assistant"}, {"me", "user"}};
    auto rr = read(R"({"dialog": [{"speaker": "me", "text": "q"}, {"speaker": "bot", "text": "a"}]})",
                   FileKind::JsonLines, src);
    ASSERT_EQ(rr.records.size(), 1u);
    EXPECT_EQ(rr.records[0].turns[0].input, "q");
    EXPECT_EQ(rr.records[0].turns[0].output, "a");

    DataSource alp = fmt_source(DataFormat::Alpaca);
    alp.columns = {{"instruction", "prompt"}, {"output", "response"}};
    rr = read(R"([{"prompt": "p", "response": "r"}])", FileKind::JsonList, alp);
    EXPECT_EQ(rr.records[0].turns[0].input, "p");
    EXPECT_EQ(rr.records[0].turns[0].output, "r");
    // Auto-detection respects the mapping too.
    DataSource auto_src;
    auto_src.columns = alp.columns;
    rr = read(R"([{"prompt": "p", "response": "r"}])", FileKind::JsonList, auto_src);
    EXPECT_EQ(rr.file_formats[0], DataFormat::Alpaca);
}

TEST(DataReaders, TextRecordsAndPlainFiles) {
    auto rr = read(R"({"text": "one"}
{"text": "two"})",
                   FileKind::JsonLines);
    ASSERT_EQ(rr.records.size(), 2u);
    EXPECT_TRUE(rr.records[0].is_text);
    EXPECT_EQ(rr.records[1].text, "two");

    std::string doc = "Title\n\npara one\nline two\n\n\n  \npara two\n";
    DataSource s;
    rr = read(doc, FileKind::PlainText, s);
    ASSERT_EQ(rr.records.size(), 1u);
    EXPECT_EQ(rr.records[0].text, doc);
    s.split = TextSplit::Paragraph;
    rr = read(doc, FileKind::PlainText, s);
    ASSERT_EQ(rr.records.size(), 3u);
    EXPECT_EQ(rr.records[1].text, "para one\nline two");
    EXPECT_EQ(rr.records[1].line, 3);
    EXPECT_EQ(rr.records[2].line, 8);
    s.split = TextSplit::Line;
    rr = read(doc, FileKind::PlainText, s);
    EXPECT_EQ(rr.records.size(), 4u);
}

TEST(DataReaders, ByteOrderMarkAndEmptyFiles) {
    auto rr = read("\xEF\xBB\xBF[{\"text\": \"x\"}]", FileKind::JsonList);
    EXPECT_EQ(rr.records.size(), 1u);
    EXPECT_EQ(read("", FileKind::JsonList).records.size(), 0u);
    EXPECT_EQ(read("[]", FileKind::JsonList).records.size(), 0u);
    EXPECT_EQ(read("\n\n", FileKind::JsonLines).records.size(), 0u);
}

TEST(DataReaders, MalformedJsonNamesFileAndLine) {
    expect_error("{\"text\": \"a\"}\n{\"text\": \"b\"\n", FileKind::JsonLines, {"d.json:2:", "invalid JSON"});
    expect_error("[\n {\"text\": \"a\"},\n {\"text\" \"b\"}\n]", FileKind::JsonList, {"d.json:3:", "invalid JSON"});
    expect_error("[\n {\"text\": \"a\"},\n {\"text\": \"b\"\n", FileKind::JsonList, {"d.json:", "ends inside record 2"});
    expect_error("[\n {\"text\": \"a\"}\n {\"text\": \"b\"}]", FileKind::JsonList, {"d.json:3:", "expected ',' or ']'"});
    expect_error("[{\"text\": \"a\"},]", FileKind::JsonList, {"d.json:1:", "trailing comma"});
    expect_error("[{\"text\": \"a\"}] x", FileKind::JsonList, {"d.json:1:", "after the end of the list"});
    expect_error("\"just a string\"", FileKind::JsonList, {"d.json:1:", "a list of records"});
    expect_error("[{\"a\": [1}]", FileKind::JsonList, {"d.json:1:", "'}' where ']' was expected"});
    expect_error("[1]", FileKind::JsonList, {"d.json:1:", "should be a JSON object"});
    expect_error("{\"text\": 1e999}", FileKind::JsonLines, {"d.json:1:", "invalid JSON: number overflow"});
}

TEST(DataReaders, MissingFieldsAndWrongTypes) {
    expect_error("[{\"instruction\": \"a\"}]", FileKind::JsonList, {"d.json:1:", "no 'output' field", "columns:"},
                 fmt_source(DataFormat::Alpaca));
    expect_error("[{\"instruction\": \"a\", \"output\": 5}]", FileKind::JsonList,
                 {"d.json:1:", "'output' should be a string, got a number"});
    expect_error("{\"messages\": \"hi\"}", FileKind::JsonLines, {"d.json:1:", "'messages' should be a list"});
    expect_error("{\"messages\": [{\"role\": \"bot\", \"content\": \"x\"}]}", FileKind::JsonLines,
                 {"d.json:1:", "message 1 has role 'bot'", "roles:"});
    expect_error("{\"messages\": [{\"role\": \"user\"}]}", FileKind::JsonLines, {"d.json:1:", "message 1 has no 'content'"});
    expect_error("{\"messages\": [{\"role\": \"assistant\", \"content\": \"x\", \"loss\": 3}]}", FileKind::JsonLines,
                 {"'loss' should be true or false"});
    expect_error("{\"conversations\": [{\"from\": \"human\"}]}", FileKind::JsonLines, {"message 1 has no 'value'"});
    expect_error("{\"foo\": 1, \"bar\": 2}", FileKind::JsonLines, {"d.json:1:", "cannot tell the format", "bar, foo"});
    expect_error("{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}", FileKind::JsonLines,
                 {"only text parts"});
}

TEST(DataReaders, InvalidUtf8GivesByteOffset) {
    std::string bad = "{\"text\": \"ok\"}\n{\"text\": \"b\xff\"}\n";
    expect_error(bad, FileKind::JsonLines, {"d.json:2:", "invalid UTF-8 at byte offset 26", "0xff"});
    std::string text = "line one\nline \xC3\x28 two\n";
    expect_error(text, FileKind::PlainText, {"d.json:2:", "invalid UTF-8 at byte offset 14"});
    // Overlong, surrogate and out-of-range sequences are invalid; real multi-byte text is fine.
    EXPECT_EQ(find_invalid_utf8("\xC0\xAF"), 0u);
    EXPECT_EQ(find_invalid_utf8("a\xED\xA0\x80"), 1u);
    EXPECT_EQ(find_invalid_utf8("\xF4\x90\x80\x80"), 0u);
    EXPECT_EQ(find_invalid_utf8("\xE2\x82"), 0u);
    EXPECT_EQ(find_invalid_utf8("h\xC3\xA9llo \xE2\x82\xAC \xF0\x9F\x98\x80 long enough ascii tail"),
              std::string_view::npos);
}

TEST(DataReaders, SkipModeCountsBadRecords) {
    std::string text = "{\"text\": \"a\"}\nnot json\n{\"text\": 5}\n{\"text\": \"\xff\"}\n{\"text\": \"b\"}\n";
    auto rr = read(text, FileKind::JsonLines, {}, /*skip=*/true);
    EXPECT_EQ(rr.records.size(), 2u);
    EXPECT_EQ(rr.bad, 3);
    ASSERT_EQ(rr.bad_messages.size(), 3u);
    EXPECT_NE(rr.bad_messages[0].find("d.json:2:"), std::string::npos);
    EXPECT_NE(rr.bad_messages[2].find("d.json:4:"), std::string::npos);
    // In a .json list, a bad record is skipped and the others are read.
    rr = read("[{\"text\": \"a\"}, {\"text\" 1}, {\"text\": \"c\"}]", FileKind::JsonList, {}, true);
    EXPECT_EQ(rr.records.size(), 2u);
    EXPECT_EQ(rr.bad, 1);
}

TEST(DataReaders, SourcesFromFilesAndFolders) {
    namespace fs = std::filesystem;
    std::string dir = tuner::testing::make_temp_dir("readers");
    std::ofstream(dir + "/a.jsonl") << "{\"text\": \"1\"}\n{\"text\": \"2\"}\n";
    std::ofstream(dir + "/b.md") << "# doc\n";
    std::ofstream(dir + "/c.csv") << "x,y\n";
    DataSource s;
    s.path = dir;
    ReadResult rr;
    read_source(s, 0, {}, &rr);
    EXPECT_EQ(rr.files.size(), 2u);  // the .csv is not a dataset file
    EXPECT_EQ(rr.records.size(), 3u);
    s.max_records = 2;
    ReadResult limited;
    read_source(s, 0, {}, &limited);
    EXPECT_EQ(limited.records.size(), 2u);

    DataSource missing;
    missing.path = dir + "/nope.json";
    missing.where = "train.yaml:4";
    ReadResult r2;
    try {
        read_source(missing, 0, {}, &r2);
        FAIL();
    } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find("no such file"), std::string::npos);
        EXPECT_NE(std::string(e.what()).find("train.yaml:4"), std::string::npos);
    }
    DataSource csv;
    csv.path = dir + "/c.csv";
    EXPECT_THROW(read_source(csv, 0, {}, &r2), Error);
    // Relative paths are also looked up beside the config file.
    DataSource rel;
    rel.path = "a.jsonl";
    ReaderOptions o;
    o.config_dir = dir;
    ReadResult r3;
    read_source(rel, 0, o, &r3);
    EXPECT_EQ(r3.records.size(), 2u);
}

TEST(DataReaders, DefaultSystemApplies) {
    ReaderOptions o;
    o.default_system = "D";
    ReadResult rr;
    read_buffer("[{\"instruction\": \"a\", \"output\": \"b\"}, {\"instruction\": \"a\", \"output\": \"b\", \"system\": \"own\"}]",
                FileKind::JsonList, "x.json", {}, 0, o, &rr);
    EXPECT_EQ(rr.records[0].turns[0].system, "D");
    EXPECT_EQ(rr.records[1].turns[0].system, "own");
}
