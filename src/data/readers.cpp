#include "data/readers.h"

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace fs = std::filesystem;

namespace tuner {

using json = nlohmann::json;

const char* format_name(DataFormat f) {
    switch (f) {
        case DataFormat::Auto: return "auto";
        case DataFormat::Alpaca: return "alpaca";
        case DataFormat::OpenAI: return "openai";
        case DataFormat::ShareGPT: return "sharegpt";
        case DataFormat::Text: return "text";
    }
    return "?";
}

size_t find_invalid_utf8(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    size_t n = s.size(), i = 0;
    while (i < n) {
        // Fast path: 8 ASCII bytes at a time.
        while (i + 8 <= n) {
            uint64_t w;
            std::memcpy(&w, p + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        unsigned char c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t len;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) len = 2, cp = c & 0x1F;
        else if (c >= 0xE0 && c <= 0xEF) len = 3, cp = c & 0x0F;
        else if (c >= 0xF0 && c <= 0xF4) len = 4, cp = c & 0x07;
        else return i;  // a continuation byte, an overlong lead (C0, C1) or F5..FF
        if (i + len > n) return i;
        for (size_t k = 1; k < len; k++) {
            if ((p[i + k] & 0xC0) != 0x80) return i;
            cp = (cp << 6) | (p[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return i;
        i += len;
    }
    return std::string_view::npos;
}

namespace {

constexpr size_t kMaxBadMessages = 5;

// The name a source uses for one of our fields.
std::string column(const DataSource& src, const std::string& ours) {
    auto it = src.columns.find(ours);
    return it == src.columns.end() ? ours : it->second;
}

std::string type_name(const json& v) {
    switch (v.type()) {
        case json::value_t::null: return "null";
        case json::value_t::object: return "an object";
        case json::value_t::array: return "a list";
        case json::value_t::string: return "a string";
        case json::value_t::boolean: return "a boolean";
        case json::value_t::number_integer:
        case json::value_t::number_unsigned:
        case json::value_t::number_float: return "a number";
        default: return "a value";
    }
}

std::string field_list(const json& j) {
    std::string out;
    int n = 0;
    for (auto it = j.begin(); it != j.end(); ++it) {
        if (n++ == 8) {
            out += ", ...";
            break;
        }
        out += (out.empty() ? "" : ", ") + it.key();
    }
    return out.empty() ? "none" : out;
}

// Text of a field: a string, null (empty) or, with allow_parts (OpenAI message contents), a list
// of text parts.
// `what` names the field in messages ("'output'", "message 3 'content'").
std::string text_of(const json& v, const std::string& what, bool allow_parts = false) {
    if (v.is_string()) return v.get<std::string>();
    if (v.is_null()) return "";
    if (v.is_array() && allow_parts) {  // OpenAI content parts: [{"type": "text", "text": "..."}]
        std::string out;
        for (const auto& part : v) {
            if (part.is_string()) {
                out += part.get<std::string>();
                continue;
            }
            auto t = part.is_object() ? part.find("text") : json::const_iterator();
            if (!part.is_object() || t == part.end() || !t->is_string()) {
                std::string type = part.is_object() && part.contains("type") && part["type"].is_string()
                                       ? part["type"].get<std::string>()
                                       : type_name(part);
                fail("{} has a part of type '{}'; only text parts are supported", what, type);
            }
            out += t->get<std::string>();
        }
        return out;
    }
    fail("{} should be a string, got {}", what, type_name(v));
}

// A required or optional string field of an object.
std::string get_text(const json& j, const DataSource& src, const std::string& ours, bool required,
                     const char* format) {
    const std::string name = column(src, ours);
    auto it = j.find(name);
    if (it == j.end()) {
        if (!required) return "";
        fail("{} record has no '{}' field (fields: {}){}", format, name, field_list(j),
             src.columns.count(ours) ? "" : fmt::format("; map another field with columns: {{{}: NAME}}", ours));
    }
    return text_of(*it, "'" + name + "'");
}

// A loss flag: true/false, or the strings "true"/"false" as the reference accepts.
bool loss_flag(const json& v, const std::string& what) {
    if (v.is_boolean()) return v.get<bool>();
    if (v.is_string()) {
        std::string s = v.get<std::string>();
        for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
        if (s == "true") return true;
        if (s == "false") return false;
    }
    if (v.is_null()) return true;
    fail("{} should be true or false, got {}", what, v.is_string() ? "'" + v.get<std::string>() + "'" : type_name(v));
}

// Tools described in a record (a JSON string or JSON value) become part of the system text.
std::string tools_text(const json& j, const DataSource& src) {
    auto it = j.find(column(src, "tools"));
    if (it == j.end() || it->is_null()) return "";
    std::string t;
    if (it->is_string()) t = it->get<std::string>();
    else if (it->is_array() || it->is_object()) t = it->dump();
    else fail("'{}' should be a JSON string or list, got {}", column(src, "tools"), type_name(*it));
    if (t.empty() || t == "[]") return "";
    return "You have access to the following tools:\n" + t;
}

std::string join_system(const std::string& system, const std::string& tools) {
    if (tools.empty()) return system;
    if (system.empty()) return tools;
    return system + "\n\n" + tools;
}

enum class Role { System, User, Assistant };

struct Message {
    Role role;
    std::string content;
    bool train;
};

// Our role for a role name in the file: the source's `roles:` mapping first, then the names the
// formats use.
Role role_of(const std::string& name, const DataSource& src, size_t index) {
    std::string ours = name;
    auto it = src.roles.find(name);
    if (it != src.roles.end()) ours = it->second;
    if (ours == "system") return Role::System;
    if (ours == "user" || ours == "human" || ours == "observation" || ours == "tool" || ours == "function" ||
        ours == "ipython")
        return Role::User;
    if (ours == "assistant" || ours == "gpt" || ours == "function_call" || ours == "model") return Role::Assistant;
    fail("message {} has role '{}'; known roles are system, user/human, assistant/gpt, function_call, "
         "observation/tool (map others with roles: {{{}: assistant}})",
         index + 1, name, name);
}

// Messages -> turns (see readers.h).
void messages_to_turns(const std::vector<Message>& msgs, const std::string& record_system, Record* out) {
    size_t i = 0;
    while (i < msgs.size() && msgs[i].role == Role::Assistant) i++;
    std::string system = record_system, input;
    bool any_system = !record_system.empty();
    for (; i < msgs.size(); i++) {
        const Message& m = msgs[i];
        if (m.role == Role::System) {
            system = system.empty() || !any_system ? m.content : system + "\n" + m.content;
            any_system = true;
        } else if (m.role == Role::User) {
            input = input.empty() ? m.content : input + "\n" + m.content;
        } else {
            out->turns.push_back(Turn{system, input, m.content, m.train});
            system.clear();
            input.clear();
            any_system = false;
        }
    }
}

std::vector<Message> openai_messages(const json& j, const DataSource& src) {
    const std::string key = column(src, "messages");
    auto it = j.find(key);
    if (it == j.end())
        fail("openai record has no '{}' field (fields: {}){}", key, field_list(j),
             src.columns.count("messages") ? "" : "; map another field with columns: {messages: NAME}");
    if (!it->is_array()) fail("'{}' should be a list of messages, got {}", key, type_name(*it));
    const std::string role_key = column(src, "role");
    const std::string content_key = column(src, "content");
    const std::string loss_key = column(src, "loss");
    std::vector<Message> msgs;
    for (size_t i = 0; i < it->size(); i++) {
        const json& m = (*it)[i];
        if (!m.is_object()) fail("message {} should be an object, got {}", i + 1, type_name(m));
        auto r = m.find(role_key);
        if (r == m.end()) fail("message {} has no '{}' (fields: {})", i + 1, role_key, field_list(m));
        if (!r->is_string()) fail("message {} '{}' should be a string, got {}", i + 1, role_key, type_name(*r));
        Role role = role_of(r->get<std::string>(), src, i);
        std::string content;
        auto c = m.find(content_key);
        std::string what = fmt::format("message {} '{}'", i + 1, content_key);
        if (c != m.end()) content = text_of(*c, what, /*allow_parts=*/true);
        // An assistant message that calls tools (OpenAI style) trains on the calls.
        auto calls = m.find("tool_calls");
        if (role == Role::Assistant && calls != m.end() && calls->is_array() && !calls->empty()) {
            for (const auto& call : *calls) {
                const json& f = call.is_object() && call.contains("function") ? call["function"] : call;
                content += (content.empty() ? "" : "\n") + f.dump();
            }
        } else if (c == m.end()) {
            fail("message {} has no '{}' (fields: {})", i + 1, content_key, field_list(m));
        }
        bool train = true;
        auto l = m.find(loss_key);
        if (l != m.end()) train = loss_flag(*l, fmt::format("message {} '{}'", i + 1, loss_key));
        msgs.push_back(Message{role, std::move(content), train});
    }
    return msgs;
}

std::vector<Message> sharegpt_messages(const json& j, const DataSource& src) {
    const std::string key = column(src, "conversations");
    auto it = j.find(key);
    if (it == j.end())
        fail("sharegpt record has no '{}' field (fields: {}){}", key, field_list(j),
             src.columns.count("conversations") ? "" : "; map another field with columns: {conversations: NAME}");
    if (!it->is_array()) fail("'{}' should be a list of messages, got {}", key, type_name(*it));
    const std::string from_key = column(src, "from");
    const std::string value_key = column(src, "value");
    const std::string loss_key = column(src, "loss");
    std::vector<Message> msgs;
    for (size_t i = 0; i < it->size(); i++) {
        const json& m = (*it)[i];
        if (!m.is_object()) fail("message {} should be an object, got {}", i + 1, type_name(m));
        auto f = m.find(from_key);
        if (f == m.end()) fail("message {} has no '{}' (fields: {})", i + 1, from_key, field_list(m));
        if (!f->is_string()) fail("message {} '{}' should be a string, got {}", i + 1, from_key, type_name(*f));
        Role role = role_of(f->get<std::string>(), src, i);
        auto v = m.find(value_key);
        if (v == m.end()) fail("message {} has no '{}' (fields: {})", i + 1, value_key, field_list(m));
        std::string content = text_of(*v, fmt::format("message {} '{}'", i + 1, value_key));
        bool train = true;
        auto l = m.find(loss_key);
        if (l != m.end()) train = loss_flag(*l, fmt::format("message {} '{}'", i + 1, loss_key));
        msgs.push_back(Message{role, std::move(content), train});
    }
    return msgs;
}

// The system text of a record: its own field, else the source's, else the config's default.
std::string record_system(const json& j, const DataSource& src, const ReaderOptions& opts) {
    std::string s = get_text(j, src, "system", false, "");
    if (s.empty()) s = src.system.empty() ? opts.default_system : src.system;
    return s;
}

}  // namespace

DataFormat detect_format(const json& j, const DataSource& src) {
    if (!j.is_object()) return DataFormat::Auto;
    if (j.contains(column(src, "messages"))) return DataFormat::OpenAI;
    if (j.contains(column(src, "conversations"))) return DataFormat::ShareGPT;
    if (j.contains(column(src, "instruction"))) return DataFormat::Alpaca;
    if (j.contains(column(src, "text"))) return DataFormat::Text;
    return DataFormat::Auto;
}

void record_from_json(const json& j, DataFormat format, const DataSource& src, const ReaderOptions& opts,
                      Record* out) {
    if (!j.is_object()) fail("a record should be a JSON object, got {}", type_name(j));
    out->turns.clear();
    out->text.clear();
    out->is_text = false;
    switch (format) {
        case DataFormat::Alpaca: {
            std::string instruction = get_text(j, src, "instruction", true, "alpaca");
            std::string input = get_text(j, src, "input", false, "alpaca");
            std::string output = get_text(j, src, "output", true, "alpaca");
            std::string system = record_system(j, src, opts);
            auto h = j.find(column(src, "history"));
            if (h != j.end() && !h->is_null()) {
                if (!h->is_array()) fail("'{}' should be a list of [instruction, response] pairs", column(src, "history"));
                for (size_t i = 0; i < h->size(); i++) {
                    const json& pair = (*h)[i];
                    if (!pair.is_array() || pair.size() != 2)
                        fail("'{}' item {} should be a pair [instruction, response]", column(src, "history"), i + 1);
                    std::string what = fmt::format("'{}' item {}", column(src, "history"), i + 1);
                    out->turns.push_back(Turn{out->turns.empty() ? system : "", text_of(pair[0], what),
                                              text_of(pair[1], what), true});
                }
            }
            std::string turn_input = input.empty() ? instruction : instruction + "\n" + input;
            out->turns.push_back(Turn{out->turns.empty() ? system : "", std::move(turn_input), std::move(output), true});
            break;
        }
        case DataFormat::OpenAI:
        case DataFormat::ShareGPT: {
            std::vector<Message> msgs =
                format == DataFormat::OpenAI ? openai_messages(j, src) : sharegpt_messages(j, src);
            std::string own = get_text(j, src, "system", false, "");
            bool has_system_msg = std::any_of(msgs.begin(), msgs.end(), [](const Message& m) { return m.role == Role::System; });
            std::string system = own;
            if (system.empty() && !has_system_msg) system = src.system.empty() ? opts.default_system : src.system;
            messages_to_turns(msgs, join_system(system, tools_text(j, src)), out);
            break;
        }
        case DataFormat::Text: {
            out->text = get_text(j, src, "text", true, "text");
            out->is_text = true;
            break;
        }
        case DataFormat::Auto: fail("cannot tell the record's format");
    }
}

FileKind file_kind_for(const std::string& path) {
    std::string ext = fs::path(path).extension().string();
    for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
    if (ext == ".json") return FileKind::JsonList;
    if (ext == ".jsonl" || ext == ".ndjson") return FileKind::JsonLines;
    if (ext == ".txt" || ext == ".md" || ext == ".markdown" || ext == ".text") return FileKind::PlainText;
    fail("[data] {}: unknown file type '{}'; use .json (a list of records), .jsonl (one record per line), .txt or "
         ".md (plain text)",
         path, ext.empty() ? "(no extension)" : ext);
}

namespace {

// State for reading one file: numbering, error handling, the format once known.
struct FileReader {
    const std::string& name;
    const DataSource& src;
    int32_t source_index;
    int32_t file_index;
    const ReaderOptions& opts;
    ReadResult* out;
    DataFormat format;

    void bad(int64_t line, const std::string& what) {
        std::string msg = line > 0 ? fmt::format("{}:{}: {}", name, line, what) : fmt::format("{}: {}", name, what);
        if (!opts.skip_bad) fail("[data] {}", msg);
        out->bad++;
        if (out->bad_messages.size() < kMaxBadMessages) out->bad_messages.push_back(msg);
    }

    // One JSON record's text starting at `line`; `base` is its byte offset in the file.
    void record(std::string_view text, int64_t line, size_t base) {
        size_t badu = find_invalid_utf8(text);
        if (badu != std::string_view::npos) {
            // Lines inside the record up to the bad byte.
            int64_t l = line + std::count(text.begin(), text.begin() + badu, '\n');
            bad(l, fmt::format("invalid UTF-8 at byte offset {} (byte 0x{:02x}); the file must be UTF-8", base + badu,
                               static_cast<unsigned char>(text[badu])));
            return;
        }
        json j;
        try {
            j = json::parse(text.begin(), text.end());
        } catch (const json::parse_error& e) {
            // e.byte: 1-based index in `text` where the parser stopped.
            size_t at = std::min(text.size(), e.byte > 0 ? size_t(e.byte - 1) : 0);
            int64_t l = line + std::count(text.begin(), text.begin() + at, '\n');
            std::string reason = e.what();
            size_t p = reason.find(": ", reason.find("parse error"));
            if (p != std::string::npos) reason = reason.substr(p + 2);
            bad(l, "invalid JSON: " + reason);
            return;
        } catch (const json::exception& e) {  // out_of_range: a number too large for a double
            std::string reason = e.what();
            size_t p = reason.find("] ");
            bad(line, "invalid JSON: " + (p == std::string::npos ? reason : reason.substr(p + 2)));
            return;
        }
        if (!j.is_object()) {
            bad(line, fmt::format("a record should be a JSON object, got {}", type_name(j)));
            return;
        }
        if (format == DataFormat::Auto) {
            DataFormat f = detect_format(j, src);
            if (f == DataFormat::Auto) {
                bad(line, fmt::format("cannot tell the format from the fields ({}); set format: alpaca, openai, "
                                      "sharegpt or text, and columns: for other field names",
                                      field_list(j)));
                return;
            }
            format = f;
            out->file_formats[file_index] = f;
        }
        Record r;
        r.source = source_index;
        r.file = file_index;
        r.line = line;
        try {
            record_from_json(j, format, src, opts, &r);
        } catch (const Error& e) {
            bad(line, e.what());
            return;
        } catch (const json::exception& e) {  // not expected: every access is type-checked
            bad(line, fmt::format("unexpected record structure ({})", e.what()));
            return;
        }
        out->records.push_back(std::move(r));
    }

    void json_lines(std::string_view s, size_t base) {
        int64_t line = 1;
        size_t pos = 0;
        while (pos < s.size()) {
            size_t nl = s.find('\n', pos);
            size_t end = nl == std::string_view::npos ? s.size() : nl;
            std::string_view l = s.substr(pos, end - pos);
            bool blank = std::all_of(l.begin(), l.end(), [](char c) { return c == ' ' || c == '\t' || c == '\r'; });
            if (!blank) record(l, line, base + pos);
            if (nl == std::string_view::npos) break;
            pos = nl + 1;
            line++;
        }
    }

    // A .json file: a list of records. Each element is found by a scanner that tracks strings and
    // brackets, then parsed on its own, so a bad record names its own line and, with skip_bad,
    // the others are still read.
    void json_list(std::string_view s, size_t base) {
        size_t pos = 0;
        int64_t line = 1;
        auto skip_ws = [&]() {
            while (pos < s.size() && (s[pos] == ' ' || s[pos] == '\t' || s[pos] == '\r' || s[pos] == '\n')) {
                if (s[pos] == '\n') line++;
                pos++;
            }
        };
        skip_ws();
        if (pos == s.size()) return;  // an empty file: no records
        if (s[pos] == '{') {          // JSON lines in a .json file
            json_lines(s, base);
            return;
        }
        if (s[pos] != '[')
            fail("[data] {}:{}: a .json dataset should be a list of records ('[' first), got '{}'", name, line, s[pos]);
        pos++;
        int64_t index = 0;
        for (;;) {
            skip_ws();
            if (pos == s.size()) fail("[data] {}:{}: the file ends before the list is closed with ']'", name, line);
            if (s[pos] == ']') {
                if (index > 0) fail("[data] {}:{}: a ',' before ']' (trailing comma after record {})", name, line, index);
                pos++;
                break;
            }
            // One element.
            size_t start = pos;
            int64_t start_line = line;
            std::vector<char> stack;
            bool in_string = false;
            for (; pos < s.size(); pos++) {
                char c = s[pos];
                if (c == '\n') line++;
                if (in_string) {
                    if (c == '\\') {
                        if (pos + 1 < s.size() && s[pos + 1] == '\n') line++;
                        pos++;
                    } else if (c == '"') {
                        in_string = false;
                        if (stack.empty()) {
                            pos++;
                            break;
                        }
                    }
                    continue;
                }
                if (c == '"') {
                    in_string = true;
                } else if (c == '{' || c == '[') {
                    stack.push_back(c == '{' ? '}' : ']');
                } else if (c == '}' || c == ']') {
                    if (stack.empty()) break;  // the list's own ']'
                    if (stack.back() != c)
                        fail("[data] {}:{}: '{}' where '{}' was expected (record {} starts at line {})", name, line, c,
                             stack.back(), index + 1, start_line);
                    stack.pop_back();
                    if (stack.empty()) {
                        pos++;
                        break;
                    }
                } else if (stack.empty() && (c == ',' || c == ' ' || c == '\n' || c == '\r' || c == '\t')) {
                    if (c == '\n') line--;  // skip_ws counts it again
                    break;                  // end of a bare scalar element
                }
            }
            if (in_string || !stack.empty())
                fail("[data] {}:{}: the file ends inside record {} (it starts at line {}; unclosed {})", name, line,
                     index + 1, start_line, in_string ? "string" : fmt::format("'{}'", stack.back() == '}' ? '{' : '['));
            record(s.substr(start, pos - start), start_line, base + start);
            index++;
            skip_ws();
            if (pos < s.size() && s[pos] == ',') {
                pos++;
                continue;
            }
            if (pos < s.size() && s[pos] == ']') {
                pos++;
                break;
            }
            if (pos == s.size()) fail("[data] {}:{}: the file ends before the list is closed with ']'", name, line);
            fail("[data] {}:{}: expected ',' or ']' after record {}, got '{}'", name, line, index, s[pos]);
        }
        skip_ws();
        if (pos != s.size()) fail("[data] {}:{}: unexpected text after the end of the list", name, line);
    }

    void plain_text(std::string_view s, size_t base) {
        size_t badu = find_invalid_utf8(s);
        if (badu != std::string_view::npos) {
            int64_t l = 1 + std::count(s.begin(), s.begin() + badu, '\n');
            bad(l, fmt::format("invalid UTF-8 at byte offset {} (byte 0x{:02x}); the file must be UTF-8", base + badu,
                               static_cast<unsigned char>(s[badu])));
            return;
        }
        auto add = [&](std::string_view text, int64_t line) {
            bool blank = std::all_of(text.begin(), text.end(), [](char c) {
                return c == ' ' || c == '\t' || c == '\r' || c == '\n';
            });
            if (blank) return;
            Record r;
            r.is_text = true;
            r.text = std::string(text);
            r.source = source_index;
            r.file = file_index;
            r.line = line;
            out->records.push_back(std::move(r));
        };
        if (src.split == TextSplit::File) {
            add(s, 1);
            return;
        }
        // Lines (without their "\n" / "\r\n"); paragraphs are runs of non-blank lines joined by "\n".
        int64_t line = 1, para_line = 0;
        size_t pos = 0, para_start = 0, para_end = 0;
        bool in_para = false;
        while (pos <= s.size()) {
            size_t nl = s.find('\n', pos);
            size_t end = nl == std::string_view::npos ? s.size() : nl;
            std::string_view l = s.substr(pos, end - pos);
            if (!l.empty() && l.back() == '\r') l.remove_suffix(1);
            bool blank = std::all_of(l.begin(), l.end(), [](char c) { return c == ' ' || c == '\t'; });
            if (src.split == TextSplit::Line) {
                add(l, line);
            } else if (blank) {
                if (in_para) add(s.substr(para_start, para_end - para_start), para_line);
                in_para = false;
            } else {
                if (!in_para) para_start = pos, para_line = line, in_para = true;
                para_end = pos + l.size();
            }
            if (nl == std::string_view::npos) break;
            pos = nl + 1;
            line++;
        }
        if (in_para) add(s.substr(para_start, para_end - para_start), para_line);
    }
};

std::string read_file_bytes(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("[data] {}: cannot open the file", path);
    std::string bytes;
    f.seekg(0, std::ios::end);
    std::streamoff size = f.tellg();
    f.seekg(0, std::ios::beg);
    if (size > 0) {
        bytes.resize(size_t(size));
        f.read(bytes.data(), size);
        if (!f) fail("[data] {}: read error", path);
    }
    return bytes;
}

}  // namespace

void read_buffer(std::string_view bytes, FileKind kind, const std::string& name, const DataSource& src,
                 int32_t source_index, const ReaderOptions& opts, ReadResult* out) {
    int32_t file_index = int32_t(out->files.size());
    out->files.push_back(name);
    DataFormat format = src.format;
    if (kind == FileKind::PlainText) {
        if (format != DataFormat::Auto && format != DataFormat::Text)
            fail("[data] {}: a plain-text file can only be read as format: text, not {}", name, format_name(format));
        format = DataFormat::Text;
    }
    out->file_formats.push_back(format);
    size_t base = 0;
    if (bytes.size() >= 3 && bytes.substr(0, 3) == "\xEF\xBB\xBF") {  // a UTF-8 byte order mark
        bytes.remove_prefix(3);
        base = 3;
    }
    FileReader r{name, src, source_index, file_index, opts, out, format};
    switch (kind) {
        case FileKind::JsonList: r.json_list(bytes, base); break;
        case FileKind::JsonLines: r.json_lines(bytes, base); break;
        case FileKind::PlainText: r.plain_text(bytes, base); break;
    }
}

void read_source(const DataSource& src, int32_t source_index, const ReaderOptions& opts, ReadResult* out) {
    fs::path p = src.path;
    std::error_code ec;
    if (!fs::exists(p, ec) && p.is_relative() && !opts.config_dir.empty()) {
        fs::path alt = fs::path(opts.config_dir) / p;
        if (fs::exists(alt, ec)) p = alt;
    }
    if (!fs::exists(p, ec)) {
        std::string also = p.is_relative() && !opts.config_dir.empty()
                               ? fmt::format(" (looked in the current folder and in {})", opts.config_dir)
                               : "";
        fail("[data] {}: no such file or folder{} (configured at {})", src.path, also, src.where);
    }
    std::vector<std::string> files;
    if (fs::is_directory(p, ec)) {
        for (const auto& e : fs::directory_iterator(p, ec)) {
            if (!e.is_regular_file()) continue;
            std::string ext = e.path().extension().string();
            for (char& c : ext) c = char(std::tolower(static_cast<unsigned char>(c)));
            bool text_file = ext == ".txt" || ext == ".md" || ext == ".markdown" || ext == ".text";
            bool json_file = ext == ".json" || ext == ".jsonl" || ext == ".ndjson";
            if (json_file || (text_file && (src.format == DataFormat::Auto || src.format == DataFormat::Text)))
                files.push_back(e.path().string());
        }
        std::sort(files.begin(), files.end());
        if (files.empty()) fail("[data] {}: the folder has no .json, .jsonl, .txt or .md files", p.string());
    } else {
        files.push_back(p.string());
    }
    size_t start = out->records.size();
    for (const auto& f : files) {
        FileKind kind = file_kind_for(f);
        std::string bytes = read_file_bytes(f);
        read_buffer(bytes, kind, f, src, source_index, opts, out);
        if (src.max_records > 0 && out->records.size() - start >= size_t(src.max_records)) {
            out->records.resize(start + size_t(src.max_records));
            break;
        }
    }
}

}  // namespace tuner
