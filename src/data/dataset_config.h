// The `data:` section of a training config (docs/data.md lists every key with its type and
// default):
//
//   data:
//     train:
//       - {path: data/alpaca.json, format: alpaca, repeat: 2}
//       - {path: data/chats.jsonl, format: openai, columns: {messages: conversation}}
//     eval: [{path: data/val.jsonl}]        # or eval_ratio: 0.02
//     template: auto
//     max_length: 2048
//     pack: true
//
// The structs below are plain data with no YAML in them, so the readers (and the fuzz target)
// can use them without the config code.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace tuner {

class ConfigView;

// Dataset formats. Auto picks one from the first record's fields (messages -> openai,
// conversations -> sharegpt, instruction -> alpaca, text -> text) or from a .txt/.md extension.
enum class DataFormat { Auto, Alpaca, OpenAI, ShareGPT, Text };

const char* format_name(DataFormat f);  // readers.cpp

// How a plain-text file (.txt, .md) becomes `text` records.
enum class TextSplit { File, Paragraph, Line };

struct DataSource {
    std::string path;  // a file (.json, .jsonl, .txt, .md) or a folder of them (sorted by name)
    DataFormat format = DataFormat::Auto;
    double repeat = 1.0;   // times each record appears per epoch (the fraction: a seeded subset)
    double weight = -1.0;  // share of the epoch instead of repeat (< 0: not given)
    std::map<std::string, std::string> columns;  // our field name -> the file's field name
    std::map<std::string, std::string> roles;    // the file's role name -> ours (user, assistant, ...)
    TextSplit split = TextSplit::File;           // plain-text files only
    std::string system;                          // system text for records without one
    int64_t max_records = 0;                     // read at most this many records (0: all)
    std::string where;                           // where it was configured ("train.yaml:5"), for messages
};

struct DataConfig {
    std::vector<DataSource> train, eval;
    double eval_ratio = 0.0;       // when eval is empty: this share of train samples, seeded
    std::string template_name = "auto";
    int64_t max_length = 2048;
    bool pack = true;
    bool shuffle = true;
    bool group_by_length = false;  // pack: false only: batches of similar lengths
    bool pad_to_max_length = false;  // pack: false only: rows of max_length instead of the batch's longest
    bool skip_bad = false;         // on_error: skip (count bad records) instead of stop
    int add_bos = -1;              // -1 auto (when the tokenizer adds BOS), 0 never, 1 always
    std::string system;            // default system text (a source's `system` wins)
    std::string tokenizer;         // a tokenizer folder or file; "" = the model folder
    int64_t seed = -1;             // -1: the caller's seed (train.seed)
    std::string config_dir;        // folder of the config file: relative paths are tried there too
};

// Keys accepted under `data:` and under each source.
const std::vector<std::string>& data_config_keys();
const std::vector<std::string>& data_source_keys();

// Reads the `data:` mapping. Every unknown key, wrong type or out-of-range value is an error
// naming the key path and its line.
DataConfig data_config_from_yaml(const ConfigView& data);

}  // namespace tuner
