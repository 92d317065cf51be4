// tuner data CONFIG.yaml [--show N] [--ids] [--set key=value ...]: reads the data: section of a
// training config (and model: for the tokenizer and template: auto), prepares the dataset exactly
// as training would and prints what it became: counts, lengths, packing, rendered samples.
// tuner templates [NAME]: the chat templates with their strings.
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include <omp.h>

#include "cli/commands.h"
#include "core/error.h"
#include "core/threads.h"
#include "data/dataset.h"
#include "io/yaml_config.h"
#include "tokenizer/tokenizer.h"

namespace fs = std::filesystem;

namespace tuner::cli {

namespace {

// 1234567 -> "1,234,567"
std::string grouped(int64_t v) {
    std::string s = std::to_string(v < 0 ? -v : v), out;
    for (size_t i = 0; i < s.size(); i++) {
        if (i > 0 && (s.size() - i) % 3 == 0) out += ',';
        out += s[i];
    }
    return v < 0 ? "-" + out : out;
}

std::string percent(int64_t part, int64_t whole) {
    return whole > 0 ? fmt::format("{:.1f}%", 100.0 * double(part) / double(whole)) : "-";
}

// A string with control characters shown as escapes, for template listings.
std::string escaped(const std::string& s) {
    std::string out = "\"";
    for (char c : s) {
        if (c == '\n') out += "\\n";
        else if (c == '\t') out += "\\t";
        else if (c == '"') out += "\\\"";
        else if (c == '\\') out += "\\\\";
        else out += c;
    }
    return out + "\"";
}

// A path from the config: as given when it exists, else beside the config file.
std::string resolve_path(const std::string& p, const std::string& config_dir) {
    std::error_code ec;
    if (p.empty() || fs::exists(p, ec) || fs::path(p).is_absolute() || config_dir.empty()) return p;
    fs::path alt = fs::path(config_dir) / p;
    return fs::exists(alt, ec) ? alt.string() : p;
}

void print_lengths(const Dataset& d) {
    const SampleSet& s = *d.samples;
    std::vector<int64_t> lengths;
    lengths.reserve(d.items.size());
    // Unique samples of this dataset (items hold repeats).
    std::vector<int64_t> ids = d.items;
    std::sort(ids.begin(), ids.end());
    ids.erase(std::unique(ids.begin(), ids.end()), ids.end());
    for (int64_t id : ids) lengths.push_back(s.length(id));
    if (lengths.empty()) return;
    std::vector<int64_t> sorted = lengths;
    std::sort(sorted.begin(), sorted.end());
    double mean = 0;
    for (int64_t l : sorted) mean += double(l);
    mean /= double(sorted.size());
    auto pct = [&](double p) { return sorted[std::min(sorted.size() - 1, size_t(p * double(sorted.size())))]; };
    std::printf("  lengths       min %s, median %s, mean %.1f, p95 %s, max %s tokens\n", grouped(sorted.front()).c_str(),
                grouped(pct(0.5)).c_str(), mean, grouped(pct(0.95)).c_str(), grouped(sorted.back()).c_str());
    // Eight equal bins up to max_length.
    const int bins = 8;
    int64_t width = std::max<int64_t>(1, (d.max_length + bins - 1) / bins);
    std::vector<int64_t> count(bins, 0);
    for (int64_t l : lengths) count[size_t(std::min<int64_t>(bins - 1, (l - 1) / width))]++;
    int64_t most = *std::max_element(count.begin(), count.end());
    int digits = int(std::to_string(d.max_length).size());
    for (int b = 0; b < bins; b++) {
        int64_t lo = b * width + 1, hi = std::min(d.max_length, (b + 1) * width);
        int bar = most > 0 ? int((count[size_t(b)] * 40 + most - 1) / most) : 0;
        std::printf("  %*lld-%-*lld %-40s %s\n", digits + 2, (long long)lo, digits, (long long)hi,
                    std::string(size_t(bar), '#').c_str(), grouped(count[size_t(b)]).c_str());
    }
}

void print_stats(const char* title, const Dataset& d, int64_t batch_size, int64_t held_out = 0) {
    const DataStats& st = d.stats;
    std::printf("%s\n", title);
    std::printf("  records       %s", grouped(st.records).c_str());
    if (st.bad) std::printf(" (+%s bad ones skipped)", grouped(st.bad).c_str());
    std::printf("\n");
    for (const auto& m : st.bad_messages) std::printf("    skipped: %s\n", m.c_str());
    if (st.bad > int64_t(st.bad_messages.size()))
        std::printf("    ... and %s more\n", grouped(st.bad - int64_t(st.bad_messages.size())).c_str());
    std::printf("  samples       %s (%s turns", grouped(st.samples).c_str(), grouped(st.turns).c_str());
    if (st.text_split) std::printf("; %s long texts split into max_length pieces", grouped(st.text_split).c_str());
    if (held_out) std::printf("; %s more held out for eval", grouped(held_out).c_str());
    std::printf(")\n");
    int64_t dropped = st.dropped_no_answer + st.dropped_untrained;
    std::printf("  dropped       %s", grouped(dropped).c_str());
    if (dropped)
        std::printf(" (%s without an assistant turn, %s with nothing to train; e.g. %s)",
                    grouped(st.dropped_no_answer).c_str(), grouped(st.dropped_untrained).c_str(),
                    st.dropped_example.c_str());
    std::printf("\n");
    std::printf("  truncated     %s (%s of samples longer than max_length %s, cut)\n", grouped(st.truncated).c_str(),
                percent(st.truncated, st.samples).c_str(), grouped(d.max_length).c_str());
    std::printf("  tokens        %s, trained %s (%s)\n", grouped(st.tokens).c_str(), grouped(st.trained_tokens).c_str(),
                percent(st.trained_tokens, st.tokens).c_str());
    if (st.epoch_samples != st.samples)
        std::printf("  per epoch     %s samples, %s tokens, %s trained (repeats and weights applied)\n",
                    grouped(st.epoch_samples).c_str(), grouped(st.epoch_tokens).c_str(),
                    grouped(st.epoch_trained_tokens).c_str());
    print_lengths(d);
    if (d.packed)
        std::printf("  packing       %s rows of %s tokens, efficiency %s (tokens in rows / row capacity)\n",
                    grouped(d.num_rows()).c_str(), grouped(d.max_length).c_str(),
                    fmt::format("{:.1f}%", 100.0 * d.efficiency(batch_size)).c_str());
    else
        std::printf("  rows          %s, one sample each, padded to %s; efficiency %s at batch size %lld%s\n",
                    grouped(d.num_rows()).c_str(), d.pad_to_max_length ? "max_length" : "the longest in the batch",
                    fmt::format("{:.1f}%", 100.0 * d.efficiency(batch_size)).c_str(), (long long)batch_size,
                    d.group_by_length ? " (grouped by length)" : "");
}

void print_sample(const Datasets& data, int64_t id, int64_t number, const Tokenizer& tok, bool color, bool ids) {
    const SampleSet& s = *data.train.samples;
    const SampleInfo& si = s.info[size_t(id)];
    std::string where = fmt::format("{}:{}", data.files[size_t(si.file)], si.line);
    std::string what = si.chunk >= 0 ? fmt::format("text piece {}", si.chunk + 1)
                                     : si.turns ? fmt::format("{} turn{}", si.turns, si.turns == 1 ? "" : "s")
                                                : "text";
    std::printf("\n--- sample %lld (%s, %s, %s tokens, %s trained%s) ---\n", (long long)number, where.c_str(),
                what.c_str(), grouped(s.length(id)).c_str(), grouped(s.trained(id)).c_str(),
                si.truncated ? ", truncated" : "");
    std::string text =
        render_sample(s.tokens_of(id), s.labels_of(id), s.length(id), tok, color ? RenderStyle::Color : RenderStyle::Markers);
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::printf("\n");
    if (ids) {
        std::string t = "input_ids:", l = "labels:   ";
        for (int64_t k = 0; k < s.length(id); k++) {
            t += " " + std::to_string(s.tokens_of(id)[k]);
            l += " " + std::to_string(s.labels_of(id)[k]);
        }
        std::printf("%s\n%s\n", t.c_str(), l.c_str());
    }
}

int run_data(const std::string& config_path, const std::vector<std::string>& sets, int show, bool ids, int threads) {
    set_num_threads(threads);
    ConfigFile file = config_load(config_path);
    for (const auto& s : sets) config_apply_set(file, s);
    ConfigView root(file);
    DataConfig cfg = data_config_from_yaml(root.child("data"));
    std::string model = resolve_path(root.get_string("model", ""), cfg.config_dir);
    int64_t seed = 0, batch_size = 1;
    ConfigView train = root.child("train");
    if (train.present() && train.is_map()) {
        seed = train.get_int("seed", 0);
        batch_size = std::max<int64_t>(1, train.get_int("batch_size", 1));
    }
    std::string tok_path = tokenizer_path_for(cfg, model);
    if (cfg.tokenizer.empty() && !fs::exists(tok_path))
        fail("[data] {}: the model folder does not exist (model: in {}); set model: or data.tokenizer:", tok_path,
             config_path);
    auto tok = Tokenizer::load(tok_path);

    DataBuildOptions opts;
    opts.model_dir = cfg.tokenizer.empty() ? model : (fs::exists(fs::path(model) / "config.json") ? model : "");
    opts.tokenizer_dir = fs::is_directory(tok_path) ? tok_path : fs::path(tok_path).parent_path().string();
    opts.tokenizer_name = tok_path;
    opts.seed = uint64_t(seed);
    Datasets data = build_datasets(cfg, *tok, opts);

    auto piece = [&](int32_t id) { return id >= 0 ? tok->id_to_piece(id) : std::string("none"); };
    std::printf("config        %s\n", config_path.c_str());
    std::printf("tokenizer     %s (vocab %s, BOS %s, EOS %s)\n", tok_path.c_str(), grouped(tok->vocab_size()).c_str(),
                piece(tok->bos_id()).c_str(), piece(tok->eos_id()).c_str());
    if (data.chat_template.tmpl)
        std::printf("template      %s (%s); BOS %s\n", data.chat_template.tmpl->name.c_str(),
                    data.chat_template.reason.c_str(),
                    !data.encode.chat_bos                     ? "not added"
                    : data.chat_template.tmpl->suffix_as_eos ? "at the start"
                                                             : "at the start and after each EOS");
    else
        std::printf("template      none needed (text only)\n");
    std::printf("max_length    %s, pack %s, shuffle %s, seed %lld\n", grouped(cfg.max_length).c_str(),
                cfg.pack ? "true" : "false", cfg.shuffle ? "true" : "false",
                (long long)(cfg.seed >= 0 ? cfg.seed : seed));
    for (const auto& src : data.train.stats.sources)
        std::printf("source        %s: %s, %s records -> %s samples, repeat %.3g -> %s per epoch\n", src.path.c_str(),
                    src.format.c_str(), grouped(src.records).c_str(), grouped(src.samples).c_str(), src.repeat,
                    grouped(src.epoch_samples).c_str());
    std::printf("\n");
    print_stats("train", data.train, batch_size, cfg.eval_ratio > 0 ? data.eval.stats.samples : 0);
    if (!data.eval.empty()) {
        std::printf("\n");
        print_stats(cfg.eval_ratio > 0 ? "eval (data.eval_ratio of train)" : "eval", data.eval, batch_size);
    } else {
        std::printf("\neval          none (set data.eval or data.eval_ratio for a validation loss)\n");
    }
    const DataStats& st = data.train.stats;
    std::printf("\nprepared in %.2f s: read %.2f s, tokenize and mask %.2f s, pack %.3f s (%d threads)\n",
                st.read_s + st.encode_s + st.pack_s, st.read_s, st.encode_s, st.pack_s, num_threads());

    if (show > 0) {
        bool color = isatty(STDOUT_FILENO) && std::getenv("NO_COLOR") == nullptr;
        std::printf("\nsamples in file order; %s\n",
                    color ? "trained tokens in green, the rest dimmed" : "trained tokens between [[ and ]]");
        std::vector<int64_t> ids_sorted = data.train.items;
        std::sort(ids_sorted.begin(), ids_sorted.end());
        ids_sorted.erase(std::unique(ids_sorted.begin(), ids_sorted.end()), ids_sorted.end());
        for (int64_t k = 0; k < std::min<int64_t>(show, int64_t(ids_sorted.size())); k++)
            print_sample(data, ids_sorted[size_t(k)], k + 1, *tok, color, ids);
    }
    return 0;
}

void print_template(const ChatTemplate& t, bool example) {
    std::printf("%s\n", t.name.c_str());
    std::printf("  system       %s\n", escaped(t.system).c_str());
    std::printf("  instruction  %s\n", escaped(t.instruction).c_str());
    std::printf("  suffix       %s%s\n", escaped(t.suffix).c_str(),
                t.suffix_as_eos ? " (ends the answer)" : " then the tokenizer's EOS");
    std::printf("  sep          %s\n", escaped(t.sep).c_str());
    std::string stops;
    for (const auto& s : t.stop_words) stops += (stops.empty() ? "" : " ") + escaped(s);
    std::printf("  stop words   %s\n", stops.empty() ? "-" : stops.c_str());
    if (!example) return;
    std::string text = template_system(t, "You are helpful.") + template_instruction(t, "Hi", 1) + "[[Hello!" +
                       t.suffix + (t.suffix_as_eos ? "" : "<EOS>") + "]]" + t.sep +
                       (t.suffix_as_eos ? "" : "<BOS>") + template_instruction(t, "Bye", 2) + "[[Bye!" + t.suffix +
                       (t.suffix_as_eos ? "" : "<EOS>") + "]]" + t.sep;
    std::printf("  example (trained between [[ ]], <BOS> when the tokenizer has one):\n%s\n", text.c_str());
}

}  // namespace

Command add_data(CLI::App& app) {
    struct Opts {
        std::string config;
        std::vector<std::string> sets;
        int show = 1;
        bool ids = false;
        int threads = 0;
    };
    auto o = std::make_shared<Opts>();
    auto* sub = app.add_subcommand("data", "check a dataset: counts, truncation, lengths, packing, rendered samples");
    sub->add_option("config", o->config, "training config (YAML) with a data: section")->required();
    sub->add_option("--show", o->show, "render this many samples with trained tokens marked (default 1)");
    sub->add_flag("--ids", o->ids, "also print the rendered samples' input_ids and labels");
    sub->add_option("--set", o->sets, "override a config key, e.g. --set data.max_length=1024 (repeatable)")
        ->allow_extra_args(false);
    add_threads_option(sub, &o->threads);
    return {sub, [o]() { return run_data(o->config, o->sets, o->show, o->ids, o->threads); }};
}

Command add_templates(CLI::App& app) {
    auto name = std::make_shared<std::string>();
    auto* sub = app.add_subcommand("templates", "list the chat templates with their strings");
    sub->add_option("name", *name, "show one template with an example");
    return {sub, [name]() {
                if (!name->empty()) {
                    print_template(get_chat_template(*name), true);
                    return 0;
                }
                std::printf("Chat templates (data.template: NAME, or auto to pick one from the model). Per turn:\n"
                            "  [BOS] system(when non-empty) instruction | output suffix [EOS] | sep\n"
                            "the part between bars is trained; {system}, {input} and {round} are filled in.\n\n");
                for (const auto& t : chat_templates()) {
                    print_template(t, false);
                    std::printf("\n");
                }
                return 0;
            }};
}

}  // namespace tuner::cli
