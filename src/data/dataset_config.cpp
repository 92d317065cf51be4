#include "data/dataset_config.h"

#include <filesystem>

#include "core/error.h"
#include "io/yaml_config.h"

namespace tuner {

const std::vector<std::string>& data_config_keys() {
    static const std::vector<std::string> keys = {
        "train",   "eval",   "eval_ratio", "template",  "max_length", "pack", "shuffle", "group_by_length",
        "pad",     "on_error", "add_bos",  "system",    "tokenizer",  "seed"};
    return keys;
}

const std::vector<std::string>& data_source_keys() {
    static const std::vector<std::string> keys = {"path",  "format", "repeat", "weight",     "columns",
                                                  "roles", "split",  "system", "max_records"};
    return keys;
}

namespace {

// Field names a `columns:` mapping may rename.
const std::vector<std::string>& column_names() {
    static const std::vector<std::string> names = {"instruction", "input",   "output",        "system", "history",
                                                   "messages",    "role",    "content",       "loss",   "conversations",
                                                   "from",        "value",   "tools",         "text"};
    return names;
}

const std::vector<std::string>& role_names() {
    static const std::vector<std::string> names = {"system", "user", "assistant", "function_call", "observation"};
    return names;
}

DataSource source_from_yaml(const ConfigView& v) {
    DataSource s;
    s.where = v.where();
    if (v.is_scalar()) {  // a bare path
        s.path = v.as_string();
        if (s.path.empty()) v.fail(v.path() + " should be a file path, got an empty string");
        return s;
    }
    if (!v.is_map())
        v.fail(fmt::format("{} should be a source mapping like {{path: data.json, format: alpaca}}, got {}", v.path(),
                           v.describe()));
    v.check_keys(data_source_keys());
    ConfigView p = v.child("path");
    if (!p.present()) v.fail(fmt::format("{} has no 'path' (the dataset file or folder)", v.path()));
    s.path = p.as_string();
    if (s.path.empty()) p.fail(p.path() + " should be a file path, got an empty string");
    std::string f = v.get_choice("format", "auto", {"auto", "alpaca", "openai", "sharegpt", "text"});
    s.format = f == "alpaca"     ? DataFormat::Alpaca
               : f == "openai"   ? DataFormat::OpenAI
               : f == "sharegpt" ? DataFormat::ShareGPT
               : f == "text"     ? DataFormat::Text
                                 : DataFormat::Auto;
    bool has_repeat = v.has("repeat"), has_weight = v.has("weight");
    if (has_repeat && has_weight)
        v.fail(fmt::format("{} gives both repeat and weight; use one (repeat: times per epoch, weight: share of "
                           "the epoch)",
                           v.path()));
    s.repeat = v.get_float("repeat", 1.0);
    if (!(s.repeat >= 0.0) || s.repeat > 1e6)
        v.child("repeat").fail(fmt::format("{}.repeat should be a number >= 0, got {}", v.path(), s.repeat));
    if (has_weight) {
        s.weight = v.get_float("weight", 1.0);
        if (!(s.weight > 0.0) || s.weight > 1e9)
            v.child("weight").fail(fmt::format("{}.weight should be a number > 0, got {}", v.path(), s.weight));
    }
    s.columns = v.get_string_map("columns");
    for (const auto& [ours, theirs] : s.columns) {
        const auto& names = column_names();
        if (std::find(names.begin(), names.end(), ours) == names.end()) {
            std::string near = closest_key(ours, names);
            v.child("columns").fail(fmt::format("{}.columns: unknown field '{}'{}; the mapping is our name: the file's "
                                                "name, with our names from: instruction, input, output, system, "
                                                "history, messages, role, content, loss, conversations, from, value, "
                                                "tools, text",
                                                v.path(), ours, near.empty() ? "" : " (did you mean '" + near + "'?)"));
        }
        if (theirs.empty()) v.child("columns").fail(fmt::format("{}.columns.{} is empty", v.path(), ours));
    }
    s.roles = v.get_string_map("roles");
    for (const auto& [theirs, ours] : s.roles) {
        const auto& names = role_names();
        if (std::find(names.begin(), names.end(), ours) == names.end())
            v.child("roles").fail(fmt::format("{}.roles.{} should be one of system, user, assistant, function_call, "
                                              "observation, got '{}'",
                                              v.path(), theirs, ours));
    }
    std::string split = v.get_choice("split", "file", {"file", "paragraph", "line"});
    s.split = split == "paragraph" ? TextSplit::Paragraph : split == "line" ? TextSplit::Line : TextSplit::File;
    s.system = v.get_string("system", "");
    s.max_records = v.get_int("max_records", 0);
    if (s.max_records < 0) v.child("max_records").fail(v.path() + ".max_records should be >= 0 (0: all)");
    return s;
}

std::vector<DataSource> sources_from_yaml(const ConfigView& v) {
    std::vector<DataSource> out;
    if (!v.present()) return out;
    if (v.is_list()) {
        for (const auto& item : v.items()) out.push_back(source_from_yaml(item));
    } else {
        out.push_back(source_from_yaml(v));
    }
    int with_weight = 0;
    for (const auto& s : out) with_weight += s.weight > 0;
    if (with_weight > 0 && with_weight < int(out.size()))
        v.fail(fmt::format("{}: either every source has a weight or none does ({} of {} have one); use repeat for "
                           "fixed counts",
                           v.path(), with_weight, out.size()));
    return out;
}

}  // namespace

DataConfig data_config_from_yaml(const ConfigView& data) {
    DataConfig c;
    c.config_dir = std::filesystem::path(data.file().file).parent_path().string();
    if (!data.present()) data.fail("the config has no 'data:' section (data: {train: [{path: ..., format: ...}]})");
    data.check_keys(data_config_keys());
    c.train = sources_from_yaml(data.child("train"));
    if (c.train.empty()) data.fail("data.train is empty: give one or more sources, e.g. train: [{path: data.json}]");
    c.eval = sources_from_yaml(data.child("eval"));
    c.eval_ratio = data.get_float("eval_ratio", 0.0);
    if (!(c.eval_ratio >= 0.0 && c.eval_ratio < 1.0))
        data.child("eval_ratio").fail(fmt::format("data.eval_ratio should be in [0, 1), got {}", c.eval_ratio));
    if (!c.eval.empty() && c.eval_ratio > 0.0)
        data.child("eval_ratio").fail("data.eval and data.eval_ratio are both given; use one");
    c.template_name = data.get_string("template", "auto");
    c.max_length = data.get_int("max_length", 2048);
    if (c.max_length < 2 || c.max_length > (int64_t(1) << 24))
        data.child("max_length").fail(fmt::format("data.max_length should be in [2, 16777216], got {}", c.max_length));
    c.pack = data.get_bool("pack", true);
    c.shuffle = data.get_bool("shuffle", true);
    c.group_by_length = data.get_bool("group_by_length", false);
    c.pad_to_max_length = data.get_choice("pad", "longest", {"longest", "max_length"}) == "max_length";
    c.skip_bad = data.get_choice("on_error", "stop", {"stop", "skip"}) == "skip";
    std::string bos = "auto";
    if (data.has("add_bos")) {
        ConfigView b = data.child("add_bos");
        std::string s = b.is_scalar() ? b.as_string() : "";
        if (s != "auto") {
            try {
                bos = b.as_bool() ? "true" : "false";
            } catch (const Error&) {
                b.fail(fmt::format("data.add_bos should be auto, true or false, got {}", b.describe()));
            }
        }
    }
    c.add_bos = bos == "auto" ? -1 : bos == "true" ? 1 : 0;
    c.system = data.get_string("system", "");
    c.tokenizer = data.get_string("tokenizer", "");
    c.seed = data.get_int("seed", -1);
    if (data.has("seed") && c.seed < 0) data.child("seed").fail("data.seed should be >= 0");
    return c;
}

}  // namespace tuner
