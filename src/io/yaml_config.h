// Config files: YAML loaded with its file name so that every error says where it happened.
//
//   ConfigFile cfg = config_load("train.yaml");          // "[config] train.yaml:3:7: <yaml error>"
//   config_apply_set(cfg, "data.max_length=512");        // --set a.b=value (value parsed as YAML)
//   ConfigView data = ConfigView(cfg).child("data");
//   data.check_keys({"train", "eval", "max_length"});   // unknown key -> error naming the closest
//   int64_t T = data.get_int("max_length", 2048);        // wrong type ->
//     [config] train.yaml:7: data.max_length should be an integer, got 'abc'
//
// Absent keys and explicit nulls (`key: null`, `key: ~`, `key:`) both give the default.
// Values set with --set are reported as coming from "--set data.max_length" rather than a line.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <yaml-cpp/yaml.h>

namespace tuner {

struct ConfigFile {
    std::string file;                   // the name used in messages (the path as given)
    YAML::Node root;                    // a mapping (an empty file gives an empty mapping)
    std::vector<std::string> set_keys;  // key paths replaced by --set, for messages
};

// Reads and parses a YAML file whose top level must be a mapping.
ConfigFile config_load(const std::string& path);
// Parses YAML text; `name` stands for the file in messages.
ConfigFile config_parse(const std::string& text, const std::string& name);
// Applies one "a.b.c=value" override: the value is parsed as YAML (so `x=[1, 2]` gives a list,
// `x=3` a scalar), intermediate mappings are created, and a numeric part indexes into a list
// ("data.train.0.path=x.json"). Errors name the assignment.
void config_apply_set(ConfigFile& cfg, const std::string& assignment);

// Levenshtein distance, and the known key closest to `key` ("" when none is reasonably close).
size_t edit_distance(const std::string& a, const std::string& b);
std::string closest_key(const std::string& key, const std::vector<std::string>& known);

// A node of a config file together with its key path ("data.train.0") for messages.
class ConfigView {
  public:
    explicit ConfigView(const ConfigFile& cfg);
    ConfigView(const ConfigFile& cfg, YAML::Node node, std::string path);

    const YAML::Node& node() const { return node_; }
    const std::string& path() const { return path_; }
    const ConfigFile& file() const { return *cfg_; }
    // "train.yaml:7" (line of this node when known), or "--set data.x" for overridden values.
    std::string where() const;
    // Throws "[config] WHERE: MESSAGE".
    [[noreturn]] void fail(const std::string& message) const;

    bool present() const { return node_.IsDefined() && !node_.IsNull(); }
    bool is_map() const { return node_.IsMap(); }
    bool is_list() const { return node_.IsSequence(); }
    bool is_scalar() const { return node_.IsScalar(); }
    // "a mapping", "a list", "a string 'abc'" ... for messages.
    std::string describe() const;

    // The child under `key` (may be absent: present() false). Fails if this node is not a mapping.
    ConfigView child(const std::string& key) const;
    bool has(const std::string& key) const { return child(key).present(); }
    // Children of a list, in order. Fails if this node is not a list.
    std::vector<ConfigView> items() const;
    // Keys of a mapping, in file order.
    std::vector<std::string> keys() const;

    // This node's own value.
    std::string as_string() const;
    int64_t as_int() const;
    double as_float() const;
    bool as_bool() const;

    // A child's value, or `def` when absent or null.
    std::string get_string(const std::string& key, const std::string& def) const;
    int64_t get_int(const std::string& key, int64_t def) const;
    double get_float(const std::string& key, double def) const;
    bool get_bool(const std::string& key, bool def) const;
    // A child that must be one of `choices`.
    std::string get_choice(const std::string& key, const std::string& def, const std::vector<std::string>& choices) const;
    // A child mapping of scalars to scalars (empty when absent).
    std::map<std::string, std::string> get_string_map(const std::string& key) const;

    // Fails on the first key of this mapping that is not in `known`, naming the closest known key.
    void check_keys(const std::vector<std::string>& known) const;

  private:
    const ConfigFile* cfg_;
    YAML::Node node_;
    std::string path_;
};

}  // namespace tuner
