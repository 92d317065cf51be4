// Config helpers (io/yaml_config) and the data: section: YAML errors with file:line, typed
// getters naming the key path, unknown keys naming the closest known one, --set overrides.
#include <gtest/gtest.h>

#include "core/error.h"
#include "data/dataset_config.h"
#include "io/yaml_config.h"
#include "testing.h"

#include <fstream>

using namespace tuner;

namespace {

std::string error_of(const std::function<void()>& f) {
    try {
        f();
    } catch (const Error& e) {
        return e.what();
    }
    return "";
}

DataConfig data_of(const std::string& yaml, const std::vector<std::string>& sets = {}) {
    ConfigFile cfg = config_parse(yaml, "train.yaml");
    for (const auto& s : sets) config_apply_set(cfg, s);
    return data_config_from_yaml(ConfigView(cfg).child("data"));
}

void expect_data_error(const std::string& yaml, const std::vector<std::string>& needles,
                       const std::vector<std::string>& sets = {}) {
    std::string m = error_of([&] { data_of(yaml, sets); });
    ASSERT_FALSE(m.empty()) << "no error for:\n" << yaml;
    EXPECT_EQ(m.find('\n'), std::string::npos) << m;
    for (const auto& n : needles) EXPECT_NE(m.find(n), std::string::npos) << "missing '" << n << "' in: " << m;
}

}  // namespace

TEST(DataConfig, EditDistanceAndClosest) {
    EXPECT_EQ(edit_distance("kitten", "sitting"), 3u);
    EXPECT_EQ(edit_distance("", "abc"), 3u);
    EXPECT_EQ(closest_key("max_lenght", {"max_length", "pack"}), "max_length");
    EXPECT_EQ(closest_key("len", {"max_length", "pack"}), "max_length");
    EXPECT_EQ(closest_key("zzzzzz", {"max_length", "pack"}), "");
}

TEST(DataConfig, YamlSyntaxErrorNamesLine) {
    std::string m = error_of([] { config_parse("a: 1\nb: [1, 2\nc: 3\n", "train.yaml"); });
    EXPECT_NE(m.find("[config] train.yaml:"), std::string::npos) << m;
    m = error_of([] { config_parse("- a\n- b\n", "t.yaml"); });
    EXPECT_NE(m.find("top level should be a mapping"), std::string::npos) << m;
    m = error_of([] { config_load("/nonexistent/x.yaml"); });
    EXPECT_NE(m.find("cannot open"), std::string::npos) << m;
    EXPECT_NO_THROW(config_parse("", "empty.yaml"));
}

TEST(DataConfig, TypedGettersNameThePath) {
    expect_data_error("data:\n  train: [a.json]\n  max_length: abc\n",
                      {"[config] train.yaml:3: data.max_length should be an integer, got 'abc'"});
    expect_data_error("data:\n  train: [a.json]\n  pack: maybe\n", {"train.yaml:3", "data.pack should be true or false"});
    expect_data_error("data:\n  train: [a.json]\n  eval_ratio: 1.5\n", {"data.eval_ratio should be in [0, 1)"});
    expect_data_error("data:\n  train: [a.json]\n  max_length: [1]\n", {"data.max_length should be an integer, got a list"});
    expect_data_error("data:\n  train: [a.json]\n  on_error: ignore\n", {"data.on_error should be one of stop, skip"});
    expect_data_error("data: 3\n", {"data should be a mapping"});
    expect_data_error("model: x\n", {"no 'data:' section"});
    expect_data_error("data:\n  train: []\n", {"data.train is empty"});
}

TEST(DataConfig, UnknownKeysNameTheClosest) {
    expect_data_error("data:\n  train: [a.json]\n  max_lenght: 5\n",
                      {"train.yaml:3", "unknown key 'data.max_lenght'", "did you mean 'max_length'"});
    expect_data_error("data:\n  train:\n    - {path: a.json, fromat: alpaca}\n",
                      {"unknown key 'data.train.0.fromat'", "did you mean 'format'"});
    expect_data_error("data:\n  train: [{path: a.json, format: alpacca}]\n",
                      {"data.train.0.format should be one of", "did you mean 'alpaca'"});
    expect_data_error("data:\n  train: [{path: a.json, columns: {instrucion: q}}]\n",
                      {"unknown field 'instrucion'", "did you mean 'instruction'"});
    expect_data_error("data:\n  train: [{path: a.json, roles: {bot: helper}}]\n", {"roles.bot should be one of"});
    expect_data_error("data:\n  train: [{format: alpaca}]\n", {"data.train.0 has no 'path'"});
    expect_data_error("data:\n  train: [{path: a.json, repeat: 2, weight: 1}]\n", {"both repeat and weight"});
    expect_data_error("data:\n  train: [{path: a.json, weight: 1}, {path: b.json}]\n", {"every source has a weight"});
    expect_data_error("data:\n  train: [{path: a.json, repeat: -1}]\n", {"repeat should be a number >= 0"});
}

TEST(DataConfig, FullSection) {
    DataConfig c = data_of(R"(
model: m
data:
  train:
    - {path: a.json, format: alpaca, repeat: 2.5}
    - path: b.jsonl
      format: openai
      columns: {messages: conversation}
      roles: {bot: assistant}
      system: be brief
  eval: c.jsonl
  template: qwen_chat
  max_length: 512
  pack: false
  shuffle: no
  group_by_length: true
  pad: max_length
  on_error: skip
  add_bos: false
  system: default sys
  tokenizer: tok/
  seed: 7
)");
    ASSERT_EQ(c.train.size(), 2u);
    EXPECT_EQ(c.train[0].format, DataFormat::Alpaca);
    EXPECT_DOUBLE_EQ(c.train[0].repeat, 2.5);
    EXPECT_EQ(c.train[1].columns.at("messages"), "conversation");
    EXPECT_EQ(c.train[1].roles.at("bot"), "assistant");
    EXPECT_EQ(c.train[1].system, "be brief");
    EXPECT_EQ(c.train[1].where, "train.yaml:6");
    ASSERT_EQ(c.eval.size(), 1u);
    EXPECT_EQ(c.eval[0].path, "c.jsonl");
    EXPECT_EQ(c.template_name, "qwen_chat");
    EXPECT_EQ(c.max_length, 512);
    EXPECT_FALSE(c.pack);
    EXPECT_FALSE(c.shuffle);
    EXPECT_TRUE(c.group_by_length);
    EXPECT_TRUE(c.pad_to_max_length);
    EXPECT_TRUE(c.skip_bad);
    EXPECT_EQ(c.add_bos, 0);
    EXPECT_EQ(c.system, "default sys");
    EXPECT_EQ(c.tokenizer, "tok/");
    EXPECT_EQ(c.seed, 7);

    DataConfig d = data_of("data:\n  train: a.json\n");  // defaults
    EXPECT_EQ(d.max_length, 2048);
    EXPECT_TRUE(d.pack);
    EXPECT_TRUE(d.shuffle);
    EXPECT_EQ(d.template_name, "auto");
    EXPECT_FALSE(d.skip_bad);
    EXPECT_EQ(d.add_bos, -1);
    EXPECT_EQ(d.train[0].format, DataFormat::Auto);
}

TEST(DataConfig, SetOverrides) {
    DataConfig c = data_of("data:\n  train: [{path: a.json}]\n  max_length: 64\n",
                           {"data.max_length=128", "data.pack=false", "data.train.0.format=alpaca",
                            "data.eval=[{path: v.jsonl}]", "data.template=chatml"});
    EXPECT_EQ(c.max_length, 128);
    EXPECT_FALSE(c.pack);
    EXPECT_EQ(c.train[0].format, DataFormat::Alpaca);
    ASSERT_EQ(c.eval.size(), 1u);
    EXPECT_EQ(c.eval[0].path, "v.jsonl");
    // A new section is created; a wrong value names the --set.
    DataConfig n = data_of("model: m\n", {"data.train=x.json"});
    EXPECT_EQ(n.train[0].path, "x.json");
    expect_data_error("data:\n  train: [a.json]\n", {"--set data.max_length", "should be an integer, got 'big'"},
                      {"data.max_length=big"});
    std::string m = error_of([] {
        ConfigFile cfg = config_parse("data: {train: [a.json]}\n", "t.yaml");
        config_apply_set(cfg, "data.train.5.path=x");
    });
    EXPECT_NE(m.find("out of range"), std::string::npos) << m;
    m = error_of([] {
        ConfigFile cfg = config_parse("a: 1\n", "t.yaml");
        config_apply_set(cfg, "a.b=2");
    });
    EXPECT_NE(m.find("'a' is a single value"), std::string::npos) << m;
    m = error_of([] {
        ConfigFile cfg = config_parse("a: 1\n", "t.yaml");
        config_apply_set(cfg, "novalue");
    });
    EXPECT_NE(m.find("expected KEY=VALUE"), std::string::npos) << m;
}

TEST(DataConfig, LoadFromFileKeepsItsFolder) {
    std::string dir = tuner::testing::make_temp_dir("cfg");
    std::ofstream(dir + "/t.yaml") << "data:\n  train: [a.json]\n";
    ConfigFile cfg = config_load(dir + "/t.yaml");
    DataConfig c = data_config_from_yaml(ConfigView(cfg).child("data"));
    EXPECT_EQ(c.config_dir, dir);
}
