// Arbitrary bytes as a benchmark CSV / TSV file (MMLU's CSVs, GLUE's TSV): records are read, and
// every cell is tried as a `choices` list cell, or mf::Error is thrown.
#include "eval/csv.h"
#include "fuzz_target.h"
#include "util/error.h"

MOEFORGE_FUZZ_TARGET(csv) {
  const std::string path = mf::fuzz::write_input(data, size, "test.csv");
  for (auto read : {mf::eval::read_csv, mf::eval::read_tsv}) {
    try {
      for (const auto& record : read(path))
        for (const auto& cell : record.fields) {
          try {
            (void)mf::eval::parse_list_cell(cell);
          } catch (const mf::Error&) {
          }
        }
    } catch (const mf::Error&) {
    }
  }
}
