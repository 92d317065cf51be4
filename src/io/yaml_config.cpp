#include "io/yaml_config.h"

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace tuner {

namespace {

// yaml-cpp messages carry their own "yaml-cpp: error at line ..." prefix; keep only the reason.
std::string yaml_reason(const YAML::Exception& e) { return e.msg.empty() ? std::string(e.what()) : e.msg; }

std::string lower(std::string s) {
    for (char& c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
    return s;
}

std::string quoted(const std::string& s) {
    std::string q = s.size() > 60 ? s.substr(0, 57) + "..." : s;
    return "'" + q + "'";
}

ConfigFile parse_root(YAML::Node root, const std::string& name) {
    ConfigFile cfg;
    cfg.file = name;
    if (!root.IsDefined() || root.IsNull()) {
        cfg.root = YAML::Node(YAML::NodeType::Map);
    } else if (!root.IsMap()) {
        fail("[config] {}: the top level should be a mapping of keys to values, got {}", name,
             root.IsSequence() ? "a list" : "a single value");
    } else {
        cfg.root = root;
    }
    return cfg;
}

}  // namespace

ConfigFile config_parse(const std::string& text, const std::string& name) {
    YAML::Node root;
    try {
        root = YAML::Load(text);
    } catch (const YAML::Exception& e) {
        if (e.mark.is_null()) fail("[config] {}: {}", name, yaml_reason(e));
        fail("[config] {}:{}:{}: {}", name, e.mark.line + 1, e.mark.column + 1, yaml_reason(e));
    }
    return parse_root(root, name);
}

ConfigFile config_load(const std::string& path) {
    std::ifstream f(path, std::ios::binary);
    if (!f) fail("[config] {}: cannot open the file", path);
    std::stringstream ss;
    ss << f.rdbuf();
    return config_parse(ss.str(), path);
}

void config_apply_set(ConfigFile& cfg, const std::string& assignment) {
    size_t eq = assignment.find('=');
    if (eq == std::string::npos || eq == 0)
        fail("[config] --set {}: expected KEY=VALUE, e.g. --set data.max_length=1024", assignment);
    std::string key = assignment.substr(0, eq), text = assignment.substr(eq + 1);
    std::vector<std::string> parts;
    for (size_t start = 0;;) {
        size_t dot = key.find('.', start);
        parts.push_back(key.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
        if (dot == std::string::npos) break;
        start = dot + 1;
    }
    for (const auto& p : parts)
        if (p.empty()) fail("[config] --set {}: empty part in the key '{}'", assignment, key);

    YAML::Node value;
    try {
        value = YAML::Load(text);
    } catch (const YAML::Exception&) {
        value = YAML::Node(text);  // not valid YAML on its own: take it as a plain string
    }
    if (!value.IsDefined()) value = YAML::Node(YAML::NodeType::Null);

    auto index_of = [&](const std::string& part, const YAML::Node& seq, const std::string& so_far) -> size_t {
        size_t idx = 0;
        auto [p, ec] = std::from_chars(part.data(), part.data() + part.size(), idx);
        if (ec != std::errc() || p != part.data() + part.size())
            fail("[config] --set {}: '{}' is a list; index it with a number, not '{}'", assignment, so_far, part);
        if (idx >= seq.size())
            fail("[config] --set {}: '{}' has {} items; index {} is out of range", assignment, so_far, seq.size(), idx);
        return idx;
    };

    YAML::Node cur = cfg.root;  // reference semantics: edits through cur change cfg.root
    std::string so_far;
    for (size_t i = 0; i < parts.size(); i++) {
        const std::string& part = parts[i];
        bool last = i + 1 == parts.size();
        if (cur.IsSequence()) {
            size_t idx = index_of(part, cur, so_far);
            if (last) {
                cur[idx] = value;
            } else {
                YAML::Node next = cur[idx];
                if (!next.IsMap() && !next.IsSequence()) {
                    cur[idx] = YAML::Node(YAML::NodeType::Map);
                    next.reset(cur[idx]);
                }
                cur.reset(next);
            }
        } else if (cur.IsMap() || cur.IsNull() || !cur.IsDefined()) {
            if (last) {
                cur[part] = value;
            } else {
                YAML::Node next = cur[part];
                if (!next.IsDefined() || next.IsNull() || next.IsScalar()) {
                    if (next.IsScalar())
                        fail("[config] --set {}: '{}' is a single value, it has no key '{}'", assignment,
                             so_far.empty() ? part : so_far + "." + part, parts[i + 1]);
                    cur[part] = YAML::Node(YAML::NodeType::Map);
                    next.reset(cur[part]);
                }
                cur.reset(next);
            }
        } else {
            fail("[config] --set {}: '{}' is a single value, it has no key '{}'", assignment, so_far, part);
        }
        so_far += (so_far.empty() ? "" : ".") + part;
    }
    cfg.set_keys.push_back(key);
}

size_t edit_distance(const std::string& a, const std::string& b) {
    std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
    for (size_t j = 0; j <= b.size(); j++) prev[j] = j;
    for (size_t i = 1; i <= a.size(); i++) {
        cur[0] = i;
        for (size_t j = 1; j <= b.size(); j++) {
            size_t sub = prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1);
            cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, sub});
        }
        std::swap(prev, cur);
    }
    return prev[b.size()];
}

std::string closest_key(const std::string& key, const std::vector<std::string>& known) {
    std::string best;
    size_t best_d = SIZE_MAX;
    std::string lkey = lower(key);
    for (const auto& k : known) {
        size_t d = edit_distance(lkey, lower(k));
        if (d < best_d) best_d = d, best = k;
    }
    if (best.empty()) return "";
    size_t limit = std::max<size_t>(2, (key.size() + 2) / 3);
    if (best_d <= limit) return best;
    // A prefix or part of a longer key ("len" for "max_length") is close too.
    for (const auto& k : known)
        if (lkey.size() >= 3 && lower(k).find(lkey) != std::string::npos) return k;
    return "";
}

ConfigView::ConfigView(const ConfigFile& cfg) : cfg_(&cfg), node_(cfg.root), path_() {}
ConfigView::ConfigView(const ConfigFile& cfg, YAML::Node node, std::string path)
    : cfg_(&cfg), node_(node), path_(std::move(path)) {}

std::string ConfigView::where() const {
    for (const auto& k : cfg_->set_keys)
        if (path_ == k || (path_.size() > k.size() && path_.compare(0, k.size(), k) == 0 && path_[k.size()] == '.'))
            return "--set " + k;
    if (node_.IsDefined()) {
        YAML::Mark m = node_.Mark();
        if (!m.is_null()) return fmt::format("{}:{}", cfg_->file, m.line + 1);
    }
    return cfg_->file;
}

void ConfigView::fail(const std::string& message) const {
    throw Error(fmt::format("[config] {}: {}", where(), message));
}

std::string ConfigView::describe() const {
    if (!node_.IsDefined() || node_.IsNull()) return "nothing (null)";
    if (node_.IsMap()) return "a mapping";
    if (node_.IsSequence()) return "a list";
    return quoted(node_.Scalar());
}

ConfigView ConfigView::child(const std::string& key) const {
    std::string p = path_.empty() ? key : path_ + "." + key;
    if (!present()) return ConfigView(*cfg_, YAML::Node(), p);
    if (!node_.IsMap()) fail(fmt::format("{} should be a mapping, got {}", path_.empty() ? "the file" : path_, describe()));
    const YAML::Node& n = node_;  // const access never inserts
    YAML::Node c = n[key];
    return ConfigView(*cfg_, c, p);
}

std::vector<ConfigView> ConfigView::items() const {
    std::vector<ConfigView> out;
    if (!present()) return out;
    if (!node_.IsSequence()) fail(fmt::format("{} should be a list, got {}", path_, describe()));
    for (size_t i = 0; i < node_.size(); i++) {
        const YAML::Node& n = node_;
        out.emplace_back(*cfg_, n[i], fmt::format("{}.{}", path_, i));
    }
    return out;
}

std::vector<std::string> ConfigView::keys() const {
    std::vector<std::string> out;
    if (!present()) return out;
    if (!node_.IsMap()) fail(fmt::format("{} should be a mapping, got {}", path_, describe()));
    for (auto it = node_.begin(); it != node_.end(); ++it) out.push_back(it->first.Scalar());
    return out;
}

std::string ConfigView::as_string() const {
    if (!node_.IsScalar()) fail(fmt::format("{} should be a string, got {}", path_, describe()));
    return node_.Scalar();
}

int64_t ConfigView::as_int() const {
    if (!node_.IsScalar()) fail(fmt::format("{} should be an integer, got {}", path_, describe()));
    const std::string& s = node_.Scalar();
    int64_t v = 0;
    const char* b = s.data() + (s.size() > 1 && s[0] == '+' ? 1 : 0);
    auto [p, ec] = std::from_chars(b, s.data() + s.size(), v);
    if (ec == std::errc::result_out_of_range) fail(fmt::format("{} is out of range: {}", path_, quoted(s)));
    if (ec != std::errc() || p != s.data() + s.size() || s.empty())
        fail(fmt::format("{} should be an integer, got {}", path_, quoted(s)));
    return v;
}

double ConfigView::as_float() const {
    if (!node_.IsScalar()) fail(fmt::format("{} should be a number, got {}", path_, describe()));
    const std::string& s = node_.Scalar();
    if (s.empty() || std::isspace(static_cast<unsigned char>(s[0])))
        fail(fmt::format("{} should be a number, got {}", path_, quoted(s)));
    char* end = nullptr;
    errno = 0;
    double v = std::strtod(s.c_str(), &end);
    if (end != s.c_str() + s.size()) fail(fmt::format("{} should be a number, got {}", path_, quoted(s)));
    if (errno == ERANGE && (v > 1 || v < -1)) fail(fmt::format("{} is out of range: {}", path_, quoted(s)));
    return v;
}

bool ConfigView::as_bool() const {
    if (!node_.IsScalar()) fail(fmt::format("{} should be true or false, got {}", path_, describe()));
    std::string s = lower(node_.Scalar());
    if (s == "true" || s == "yes" || s == "on") return true;
    if (s == "false" || s == "no" || s == "off") return false;
    fail(fmt::format("{} should be true or false, got {}", path_, quoted(node_.Scalar())));
}

std::string ConfigView::get_string(const std::string& key, const std::string& def) const {
    ConfigView c = child(key);
    return c.present() ? c.as_string() : def;
}
int64_t ConfigView::get_int(const std::string& key, int64_t def) const {
    ConfigView c = child(key);
    return c.present() ? c.as_int() : def;
}
double ConfigView::get_float(const std::string& key, double def) const {
    ConfigView c = child(key);
    return c.present() ? c.as_float() : def;
}
bool ConfigView::get_bool(const std::string& key, bool def) const {
    ConfigView c = child(key);
    return c.present() ? c.as_bool() : def;
}

std::string ConfigView::get_choice(const std::string& key, const std::string& def,
                                   const std::vector<std::string>& choices) const {
    ConfigView c = child(key);
    if (!c.present()) return def;
    std::string v = c.as_string();
    if (std::find(choices.begin(), choices.end(), v) != choices.end()) return v;
    std::string list;
    for (const auto& ch : choices) list += (list.empty() ? "" : ", ") + ch;
    std::string near = closest_key(v, choices);
    c.fail(fmt::format("{} should be one of {}, got {}{}", c.path(), list, quoted(v),
                       near.empty() ? "" : " (did you mean '" + near + "'?)"));
}

std::map<std::string, std::string> ConfigView::get_string_map(const std::string& key) const {
    std::map<std::string, std::string> out;
    ConfigView c = child(key);
    if (!c.present()) return out;
    if (!c.is_map()) c.fail(fmt::format("{} should be a mapping (name: value), got {}", c.path(), c.describe()));
    for (const auto& k : c.keys()) out[k] = c.child(k).as_string();
    return out;
}

void ConfigView::check_keys(const std::vector<std::string>& known) const {
    if (!present()) return;
    if (!node_.IsMap()) fail(fmt::format("{} should be a mapping, got {}", path_.empty() ? "the file" : path_, describe()));
    for (auto it = node_.begin(); it != node_.end(); ++it) {
        std::string k = it->first.Scalar();
        if (std::find(known.begin(), known.end(), k) != known.end()) continue;
        std::string full = path_.empty() ? k : path_ + "." + k;
        ConfigView at(*cfg_, it->first, full);
        std::string near = closest_key(k, known);
        if (!near.empty()) at.fail(fmt::format("unknown key '{}' (did you mean '{}'?)", full, near));
        std::string list;
        for (const auto& kk : known) list += (list.empty() ? "" : ", ") + kk;
        at.fail(fmt::format("unknown key '{}' (known keys here: {})", full, list));
    }
}

}  // namespace tuner
