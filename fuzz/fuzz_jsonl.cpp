// Arbitrary bytes as a JSONL data file (eval tasks, training and calibration data all read JSONL
// through the same reader): every line is an object or the read throws mf::Error.
#include "eval/jsonl.h"
#include "train/data.h"
#include "fuzz_target.h"
#include "util/error.h"

MOEFORGE_FUZZ_TARGET(jsonl) {
  const std::string path = mf::fuzz::write_input(data, size, "data.jsonl");
  try {
    for (const auto& doc : mf::eval::load_jsonl(path)) (void)doc.origin();
  } catch (const mf::Error&) {
  }
  try {
    (void)mf::read_documents_jsonl(path);  // training documents: "text" plus optional "domain"
  } catch (const mf::Error&) {
  }
}
