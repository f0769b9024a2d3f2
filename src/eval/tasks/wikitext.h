// WikiText helpers shared by the task and its tests.
#pragma once
#include <string>
#include <vector>

namespace mf::eval {

// lm-eval wikitext_detokenizer (Moses-style spacing undone).
std::string wikitext_detokenize(const std::string& page);
// HF wikitext_document_level: a page starts at every level-1 heading line " = Title = ".
std::vector<std::string> wikitext_split_pages(const std::string& raw);

}  // namespace mf::eval
