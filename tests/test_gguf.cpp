// GGUF writer / reader / exporter (src/gguf). The agreement with llama.cpp itself is
// tests/gguf/check_llama_cpp.sh (CTest gguf_llama_cpp); these tests pin the file format, the
// Q8_0 encoding, the tensor mapping and the refusals without node.
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstring>

#include "gguf/export.h"
#include "gguf/export_internal.h"
#include "gguf/gguf_reader.h"
#include "gguf/gguf_writer.h"
#include "io/checkpoint.h"
#include "model/model.h"
#include "model_fixtures.h"
#include "test_helpers.h"
#include "util/fs.h"
#include "util/json.h"

using namespace mf;
using mf::testing_helpers::error_of;

namespace {

std::string tmp_path(const std::string& name) {
  const std::string d = ::testing::TempDir() + "/mf_gguf";
  make_dirs(d);
  return d + "/" + name;
}

gguf::TensorFill bytes_of(const std::string& b) {
  return [b](const gguf::Sink& sink) { sink(b.data(), b.size()); };
}

std::string floats(const std::vector<float>& v) { return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 4); }

// A small valid file: every scalar type, strings, arrays, three tensors.
std::string write_sample(const std::string& path) {
  gguf::Writer w("llama");
  w.add_u8("t.u8", 200);
  w.add_i8("t.i8", -100);
  w.add_u16("t.u16", 60000);
  w.add_i16("t.i16", -30000);
  w.add_u32("t.u32", 4000000000u);
  w.add_i32("t.i32", -2000000000);
  w.add_u64("t.u64", 18000000000000000000ull);
  w.add_i64("t.i64", -9000000000000000000ll);
  w.add_f32("t.f32", 0.5f);
  w.add_f64("t.f64", 0.25);
  w.add_bool("t.bool", true);
  w.add_string("t.str", "h\xC3\xA9llo");
  w.add_string_array("t.strs", {"a", "", "c c"});
  w.add_i32_array("t.i32s", {1, -2, 3});
  w.add_f32_array("t.f32s", {1.5f});
  std::vector<float> a(3 * 32);
  for (size_t i = 0; i < a.size(); ++i) a[i] = static_cast<float>(i) * 0.25f;
  w.add_tensor("a.weight", {32, 3}, gguf::TensorType::F32, bytes_of(floats(a)));
  w.add_tensor("b.weight", {5}, gguf::TensorType::F16, bytes_of(std::string(10, '\x3c')));
  w.add_tensor("c.weight", {64, 1}, gguf::TensorType::Q8_0, bytes_of(std::string(68, '\x01')));
  w.write(path);
  return read_file(path);
}

void expect_one_line_error(const std::string& path, const std::string& needle) {
  const std::string e = error_of([&] { gguf::read_file(path); });
  EXPECT_EQ(e.rfind(path + ": ", 0), 0u) << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  EXPECT_NE(e.find(needle), std::string::npos) << "'" << needle << "' not in: " << e;
}

// Hand-made headers for the corruptions the writer never produces.
struct Raw {
  std::string b;
  void u32(uint32_t v) { b.append(reinterpret_cast<const char*>(&v), 4); }
  void u64(uint64_t v) { b.append(reinterpret_cast<const char*>(&v), 8); }
  void str(const std::string& s) { u64(s.size()); b += s; }
  void header(uint64_t tensors, uint64_t kv) { u32(gguf::kMagic); u32(3); u64(tensors); u64(kv); }
};

std::string save_raw(const std::string& name, const std::string& bytes) {
  const std::string p = tmp_path(name);
  write_file_atomic(p, bytes);
  return p;
}

// A model directory with the models/tiny tokenizer (8192 tokens) for the family `name`.
std::string tiny_dir(const std::string& name, json cfg, at::ScalarType dtype = at::kFloat) {
  const std::string d = tmp_path("model-" + name);
  remove_all(d);
  cfg["vocab_size"] = 8192;
  cfg["bos_token_id"] = 0;
  cfg["eos_token_id"] = 1;
  auto m = Model::create(parse_model_config(cfg, d + "/config.json"));
  m->init_random(7, 0.1);
  m->to(dtype);
  SaveOptions so;
  so.copy_aux_from = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";
  save_checkpoint(d, cfg, m->hf_tensors(), so);
  return d;
}

gguf::ExportResult export_dir(const std::string& dir, const std::string& out, gguf::OutType t) {
  Checkpoint ck = Checkpoint::open(dir);
  const ModelConfig cfg = parse_model_config(ck.config(), ck.config_path());
  auto shared = std::make_shared<Checkpoint>(std::move(ck));
  return gguf::export_gguf(dir, cfg, [shared](const std::string& n) { return shared->get(n); }, out, t);
}

const gguf::TensorEntry& tensor(const gguf::File& f, const std::string& name) {
  for (const auto& t : f.tensors)
    if (t.name == name) return t;
  throw std::runtime_error("no tensor " + name);
}

// The F32 data of a tensor of `f`, shaped as PyTorch sees it (reverse of ne).
at::Tensor f32_data(const gguf::File& f, const std::string& bytes, const std::string& name) {
  const gguf::TensorEntry& t = tensor(f, name);
  EXPECT_EQ(t.type, 0u) << name;
  std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
  return at::from_blob(const_cast<char*>(bytes.data() + f.data_offset + t.offset), shape, at::kFloat).clone();
}

}  // namespace

TEST(Gguf, WriterReaderRoundTrip) {
  const std::string p = tmp_path("sample.gguf");
  const std::string bytes = write_sample(p);
  const gguf::File f = gguf::read_file(p);
  EXPECT_EQ(f.version, 3u);
  EXPECT_EQ(f.alignment, 32u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("t.u8"), 200);
  EXPECT_EQ(f.get_int("t.i8"), -100);
  EXPECT_EQ(f.get_int("t.u16"), 60000);
  EXPECT_EQ(f.get_int("t.i16"), -30000);
  EXPECT_EQ(f.get_int("t.u32"), 4000000000ll);
  EXPECT_EQ(f.get_int("t.i32"), -2000000000);
  EXPECT_EQ(f.find("t.u64")->value.get<uint64_t>(), 18000000000000000000ull);
  EXPECT_EQ(f.get_int("t.i64"), -9000000000000000000ll);
  EXPECT_EQ(f.get_float("t.f32"), 0.5);
  EXPECT_EQ(f.get_float("t.f64"), 0.25);
  EXPECT_EQ(f.find("t.bool")->value, true);
  EXPECT_EQ(f.get_string("t.str"), "h\xC3\xA9llo");
  EXPECT_EQ(f.find("t.strs")->value, json::array({"a", "", "c c"}));
  EXPECT_EQ(f.find("t.strs")->elem_type, gguf::ValueType::STRING);
  EXPECT_EQ(f.find("t.i32s")->value, json::array({1, -2, 3}));
  EXPECT_EQ(f.find("t.f32s")->count, 1u);
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors[0].ne, (std::vector<int64_t>{32, 3}));
  EXPECT_EQ(f.tensors[1].offset, 384u);  // 3*32*4 = 384, already aligned
  EXPECT_EQ(f.tensors[2].offset, 416u);  // 384 + pad(10) = 416
  EXPECT_EQ(f.tensors[2].nbytes, 68u);
  EXPECT_EQ(f.data_offset % 32, 0u);
  EXPECT_EQ(bytes.size(), f.data_offset + 416 + 96);  // the last tensor padded too
  const at::Tensor a = f32_data(f, bytes, "a.weight");
  EXPECT_EQ(a.size(0), 3);
  EXPECT_FLOAT_EQ(a[2][31].item<float>(), 95 * 0.25f);
}

TEST(Gguf, WriterRefusesBadTensorsAndKeys) {
  gguf::Writer w("llama");
  EXPECT_NE(error_of([&] { w.add_u32("general.alignment", 64); }).find("written twice"), std::string::npos);
  EXPECT_NE(error_of([&] { w.add_tensor("q", {33, 2}, gguf::TensorType::Q8_0, bytes_of("")); }).find("Q8_0"),
            std::string::npos);
  EXPECT_NE(error_of([&] { w.add_string_array("empty", {}); }).find("empty"), std::string::npos);
  w.add_tensor("x", {2}, gguf::TensorType::F32, bytes_of("short"));
  const std::string p = tmp_path("never.gguf");
  EXPECT_NE(error_of([&] { w.write(p); }).find("produced"), std::string::npos);
  EXPECT_FALSE(path_exists(p));  // nothing half-written
}

TEST(Gguf, Q8_0IsGgmlsReferenceQuantization) {
  std::vector<float> x(64);
  for (int j = 0; j < 32; ++j) x[j] = (j - 16) * 0.1f;  // block 0: amax 1.6
  // block 1 stays zero: scale 0, all quants 0
  std::string out;
  gguf::encode_tensor(at::from_blob(x.data(), {2, 32}, at::kFloat), gguf::TensorType::Q8_0,
                      [&](const void* d, size_t n) { out.append(static_cast<const char*>(d), n); });
  ASSERT_EQ(out.size(), 68u);
  const float d = 1.6f / 127.0f, id = 1.0f / d;
  uint16_t dh;
  std::memcpy(&dh, out.data(), 2);
  EXPECT_EQ(dh, c10::Half(d).x);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(static_cast<int8_t>(out[2 + j]), static_cast<int8_t>(std::roundf(x[j] * id))) << j;
  EXPECT_EQ(static_cast<int8_t>(out[2]), -127);
  for (int j = 34; j < 68; ++j) EXPECT_EQ(out[j], 0) << j;
}

TEST(Gguf, ReaderRefusesCorruptFilesWithOneLine) {
  const std::string good = write_sample(tmp_path("good.gguf"));
  const gguf::File gf = gguf::read_file(tmp_path("good.gguf"));
  const size_t data_end = gf.data_offset + gf.tensors.back().offset + gf.tensors.back().nbytes;
  // Every truncation of a valid file before the end of its last tensor's bytes (the padding after
  // it is not needed) is an error naming the file, never a crash or a hang.
  for (size_t n = 0; n < data_end; n += (n < 400 ? 1 : 61)) {
    const std::string p = save_raw("trunc.gguf", good.substr(0, n));
    const std::string e = error_of([&] { gguf::read_file(p); });
    ASSERT_EQ(e.rfind(p + ": ", 0), 0u) << "prefix " << n << ": " << e;
  }
  expect_one_line_error(save_raw("trunc1.gguf", good.substr(0, data_end - 1)), "file is truncated");
  EXPECT_NO_THROW(gguf::read_file(save_raw("nopad.gguf", good.substr(0, data_end))));
  std::string bad = good;
  bad[0] = 'X';
  expect_one_line_error(save_raw("magic.gguf", bad), "not a GGUF file");
  bad = good;
  bad[4] = 1;
  expect_one_line_error(save_raw("v1.gguf", bad), "version 1");
  bad = good;
  bad[4] = 7;
  expect_one_line_error(save_raw("v7.gguf", bad), "unsupported GGUF version 7");

  Raw r;  // duplicate key
  r.header(0, 2);
  for (int i = 0; i < 2; ++i) { r.str("k"); r.u32(4); r.u32(1); }
  expect_one_line_error(save_raw("dup.gguf", r.b), "duplicate metadata key 'k'");
  r = Raw();  // unknown value type
  r.header(0, 1);
  r.str("k");
  r.u32(13);
  r.b.append(16, '\0');
  expect_one_line_error(save_raw("type.gguf", r.b), "unknown value type 13");
  r = Raw();  // nested array
  r.header(0, 1);
  r.str("k");
  r.u32(9);
  r.u32(9);
  r.u64(1);
  expect_one_line_error(save_raw("nested.gguf", r.b), "nested arrays");
  r = Raw();  // an array longer than the file
  r.header(0, 1);
  r.str("k");
  r.u32(9);
  r.u32(4);
  r.u64(1ull << 60);
  expect_one_line_error(save_raw("huge.gguf", r.b), "more than the file holds");
  r = Raw();  // a string longer than the file
  r.header(0, 1);
  r.u64(1ull << 40);
  expect_one_line_error(save_raw("str.gguf", r.b), "truncated");
  r = Raw();  // alignment not a power of two
  r.header(0, 1);
  r.str("general.alignment");
  r.u32(4);
  r.u32(24);
  expect_one_line_error(save_raw("align.gguf", r.b), "not a power of 2");
  auto tensor_file = [](uint32_t type, int64_t ne0, uint64_t offset, size_t data) {
    Raw t;
    t.header(1, 0);
    t.str("w");
    t.u32(1);
    t.u64(static_cast<uint64_t>(ne0));
    t.u32(type);
    t.u64(offset);
    t.b.resize(gguf::align_up(t.b.size(), 32) + data, '\0');
    return t.b;
  };
  expect_one_line_error(save_raw("ttype.gguf", tensor_file(99, 4, 0, 16)), "unknown ggml type 99");
  expect_one_line_error(save_raw("block.gguf", tensor_file(8, 33, 0, 64)), "not a multiple of its block size 32");
  expect_one_line_error(save_raw("offset.gguf", tensor_file(0, 4, 32, 64)), "has data offset 32, expected 0");
  expect_one_line_error(save_raw("short.gguf", tensor_file(0, 8, 0, 16)), "file is truncated");
  EXPECT_NO_THROW(gguf::read_file(save_raw("ok.gguf", tensor_file(0, 8, 0, 32))));
}

TEST(Gguf, LlamaExportPermutesQkAndKeepsNormsF32) {
  json cfg = testing_fixtures::tiny_config_json("llama3_tied");
  cfg["eos_token_id"] = 1;
  const std::string dir = tiny_dir("llama3", cfg);
  const std::string out = tmp_path("llama3.gguf");
  export_dir(dir, out, gguf::OutType::f32);
  const gguf::File f = gguf::read_file(out);
  const std::string bytes = read_file(out);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_int("llama.block_count"), 2);
  EXPECT_EQ(f.get_int("llama.embedding_length"), 32);
  EXPECT_EQ(f.get_int("llama.attention.head_count_kv"), 2);
  EXPECT_EQ(f.get_int("llama.rope.dimension_count"), 8);
  EXPECT_FLOAT_EQ(static_cast<float>(f.get_float("llama.rope.freq_base")), 500000.0f);
  EXPECT_EQ(f.get_int("general.file_type"), 0);
  EXPECT_EQ(f.get_string("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(f.get_string("tokenizer.ggml.pre"), "llama-bpe");
  EXPECT_EQ(f.find("tokenizer.ggml.tokens")->count, 8192u);
  EXPECT_EQ(f.find("tokenizer.ggml.token_type")->value[0], gguf::kControl);  // <|begin_of_text|>
  EXPECT_EQ(f.find("tokenizer.ggml.add_bos_token")->value, true);
  EXPECT_EQ(f.get_int("tokenizer.ggml.padding_token_id"), 2);
  EXPECT_THROW(tensor(f, "output.weight"), std::runtime_error);  // tied: llama.cpp reuses token_embd
  EXPECT_EQ(tensor(f, "rope_freqs.weight").ne, (std::vector<int64_t>{4}));

  Checkpoint ck = Checkpoint::open(dir);
  const at::Tensor q = ck.get("model.layers.1.self_attn.q_proj.weight", at::kFloat);  // [4 heads * 8, 32]
  const at::Tensor k = ck.get("model.layers.1.self_attn.k_proj.weight", at::kFloat);  // [2 heads * 8, 32]
  const at::Tensor q_want = q.reshape({4, 2, 4, 32}).transpose(1, 2).reshape({32, 32});
  const at::Tensor k_want = k.reshape({2, 2, 4, 32}).transpose(1, 2).reshape({16, 32});
  EXPECT_TRUE(at::equal(f32_data(f, bytes, "blk.1.attn_q.weight"), q_want));
  EXPECT_TRUE(at::equal(f32_data(f, bytes, "blk.1.attn_k.weight"), k_want));
  EXPECT_TRUE(at::equal(f32_data(f, bytes, "blk.1.attn_v.weight"), ck.get("model.layers.1.self_attn.v_proj.weight", at::kFloat)));
  EXPECT_TRUE(at::equal(f32_data(f, bytes, "blk.0.ffn_down.weight"), ck.get("model.layers.0.mlp.down_proj.weight", at::kFloat)));

  const std::string out16 = tmp_path("llama3-f16.gguf");
  export_dir(dir, out16, gguf::OutType::f16);
  const gguf::File h = gguf::read_file(out16);
  EXPECT_EQ(h.get_int("general.file_type"), 1);
  EXPECT_EQ(tensor(h, "blk.0.attn_q.weight").type, 1u);      // F16
  EXPECT_EQ(tensor(h, "blk.0.attn_norm.weight").type, 0u);   // norms stay F32
  EXPECT_EQ(tensor(h, "rope_freqs.weight").type, 0u);
  EXPECT_EQ(tensor(h, "token_embd.weight").type, 1u);
}

TEST(Gguf, MixtralExportStacksExperts) {
  const std::string dir = tiny_dir("mixtral", testing_fixtures::tiny_config_json("mixtral"));
  const std::string out = tmp_path("mixtral.gguf");
  export_dir(dir, out, gguf::OutType::f32);
  const gguf::File f = gguf::read_file(out);
  const std::string bytes = read_file(out);
  EXPECT_EQ(f.get_int("llama.expert_count"), 4);
  EXPECT_EQ(f.get_int("llama.expert_used_count"), 2);
  EXPECT_EQ(f.get_int("llama.feed_forward_length"), 48);
  EXPECT_EQ(tensor(f, "blk.1.ffn_gate_exps.weight").ne, (std::vector<int64_t>{32, 48, 4}));
  EXPECT_EQ(tensor(f, "blk.1.ffn_down_exps.weight").ne, (std::vector<int64_t>{48, 32, 4}));
  EXPECT_EQ(tensor(f, "blk.1.ffn_gate_inp.weight").ne, (std::vector<int64_t>{32, 4}));
  Checkpoint ck = Checkpoint::open(dir);
  const at::Tensor up = f32_data(f, bytes, "blk.1.ffn_up_exps.weight");
  for (int e = 0; e < 4; ++e)
    EXPECT_TRUE(at::equal(up[e], ck.get("model.layers.1.block_sparse_moe.experts." + std::to_string(e) + ".w3.weight",
                                        at::kFloat)))
        << e;
  EXPECT_TRUE(at::equal(f32_data(f, bytes, "output.weight"), ck.get("lm_head.weight", at::kFloat)));

  const std::string outq = tmp_path("mixtral-q8.gguf");
  export_dir(dir, outq, gguf::OutType::q8_0);
  const gguf::File q = gguf::read_file(outq);
  EXPECT_EQ(tensor(q, "blk.0.ffn_gate_inp.weight").type, 0u);   // the router stays F32
  EXPECT_EQ(tensor(q, "blk.0.ffn_gate_exps.weight").type, 8u);  // Q8_0 (rows of 32)
  EXPECT_EQ(tensor(q, "blk.0.ffn_down_exps.weight").type, 1u);  // rows of 48: F16, as llama.cpp's converter
}

TEST(Gguf, RefusesWhatLlamaCppCannotCompute) {
  auto refusal = [](json cfg) {
    return error_of([&] { gguf::check_exportable(parse_model_config(cfg, "m/config.json")); });
  };
  json moe = testing_fixtures::tiny_config_json("llama");
  moe["model_type"] = "moeforge";
  moe["base_model_type"] = "llama";
  moe["num_experts"] = 2;
  moe["num_experts_per_tok"] = 1;
  moe["moe_layers"] = {0, 1};
  moe["expert_sizes"] = {{16, 32}, {24, 24}};
  moe["router"] = {{"type", "linear"}, {"gate", "renorm"}};
  EXPECT_NE(refusal(moe).find("layer 0 has experts of different widths (16/32)"), std::string::npos) << refusal(moe);
  moe["expert_sizes"] = {{24, 24}, {24, 24}};
  EXPECT_EQ(refusal(moe), "");
  moe["num_experts_per_tok"] = 2;
  moe["router"]["gate"] = "unit";
  EXPECT_NE(refusal(moe).find("router.gate unit"), std::string::npos);
  moe["router"] = {{"type", "mlp"}};
  EXPECT_NE(refusal(moe).find("MLP router"), std::string::npos);
  moe["router"] = {{"type", "linear"}, {"gate", "renorm"}};
  moe["moe_layers"] = {1};
  moe["expert_sizes"] = {{24, 24}};
  EXPECT_NE(refusal(moe).find("layer 0 is dense"), std::string::npos);

  json q = testing_fixtures::tiny_config_json("qwen2_moe");
  EXPECT_NE(refusal(q).find("layer 1 is dense"), std::string::npos);
  q["mlp_only_layers"] = json::array();
  EXPECT_EQ(refusal(q), "");
  q["norm_topk_prob"] = true;
  EXPECT_NE(refusal(q).find("norm_topk_prob"), std::string::npos);
  json o = testing_fixtures::tiny_config_json("olmoe");
  EXPECT_EQ(refusal(o), "");
  o["clip_qkv"] = 8.0;
  EXPECT_NE(refusal(o).find("clip_qkv"), std::string::npos);
  json l = testing_fixtures::tiny_config_json("llama");
  l["hidden_act"] = "gelu";
  EXPECT_NE(refusal(l).find("SiLU"), std::string::npos);
  EXPECT_EQ(refusal(l).rfind("m/config.json: ", 0), 0u);
  EXPECT_THROW(gguf::parse_outtype("q4_k"), UsageError);
}

TEST(Gguf, CliWritesNothingOnBadOutputs) {
  const std::string tiny = std::string(MOEFORGE_SOURCE_DIR) + "/models/tiny";
  const std::string d = tmp_path("cli");
  remove_all(d);
  make_dirs(d + "/adir");
  auto run = [](const std::string& args) { return mf::testing_helpers::run_moeforge("-q " + args, true); };
  auto r = run("convert " + tiny + " --to gguf --out " + d + "/adir");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("is a directory"), std::string::npos) << r.out;
  write_file_atomic(d + "/notes.txt", "mine");
  r = run("convert " + tiny + " --to gguf --out " + d + "/notes.txt");
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.out.find("not a GGUF file (not overwritten)"), std::string::npos) << r.out;
  EXPECT_EQ(read_file(d + "/notes.txt"), "mine");
  r = run("convert " + tiny + " --to gguf --outtype q4_k --out " + d + "/x.gguf");
  EXPECT_EQ(r.code, 2);
  EXPECT_FALSE(path_exists(d + "/x.gguf"));
  // A GGUF written earlier is replaced; info describes it.
  r = run("convert " + tiny + " --to gguf --outtype q8_0 --out " + d + "/t.gguf");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("convert " + tiny + " --to gguf --outtype bf16 --out " + d + "/t.gguf");
  ASSERT_EQ(r.code, 0) << r.out;
  r = run("info " + d + "/t.gguf");
  EXPECT_EQ(r.code, 0);
  EXPECT_NE(r.out.find("architecture  llama"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("BF16"), std::string::npos) << r.out;
  for (const auto& name : list_dir(d)) EXPECT_EQ(name.find(".tmp-"), std::string::npos) << name;
}
