// CSV (RFC 4180) and TSV readers for benchmark files as they are distributed (MMLU's CSVs, GLUE's
// TSVs), and the list cells that CSV exports of Hugging Face datasets contain. Errors are one line,
// "<origin>:<line>: <what>".
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace mf::eval {

struct CsvRecord {
  std::vector<std::string> fields;
  int64_t line = 0;  // line of the file on which the record starts (1-based)
};

// RFC 4180 with ',' between fields: a field may be quoted ("..."), a quote inside a quoted field is
// doubled (""), and a quoted field may hold commas and line breaks. Records end at CRLF, LF or CR.
// A CRLF inside a quoted field becomes LF: a file saved with Windows line endings gives the same
// strings as the original (what Python's csv module sees through open()'s universal newlines). A
// quote inside an unquoted field is an ordinary character (as in Python's csv). Blank lines are
// skipped; a UTF-8 byte order mark at the start is dropped. Errors: an unterminated quoted field, a
// character other than ',' or a line end after a closing quote.
std::vector<CsvRecord> parse_csv(const std::string& text, const std::string& origin);

// Tab-separated values without any quoting (GLUE's TSVs are read with csv.QUOTE_NONE: quotes are
// part of the text). Records end at LF (a CR before it is dropped); blank lines are skipped.
std::vector<CsvRecord> parse_tsv(const std::string& text, const std::string& origin);

// The file read whole (a regular file only), then parsed.
std::vector<CsvRecord> read_csv(const std::string& path);
std::vector<CsvRecord> read_tsv(const std::string& path);

// A list of strings written into one CSV cell, in any of the forms exports produce:
//   JSON:               ["0", "4", "2", "6"]        (json.dumps)
//   Python list repr:   ['0', '4', "it's", '6']     (pandas.DataFrame.to_csv of Python lists)
//   numpy array str:    ['0' '4' '2' '6']           (datasets.Dataset.to_csv: Arrow lists become
//                                                    numpy arrays, str() separates by blanks and
//                                                    wraps long lines)
// Python literals may use either quote and the escapes \\ \' \" \n \r \t \a \b \f \v \ooo \xhh
// \uhhhh \Uhhhhhhhh. Fails (mf::Error, no origin) when the cell is none of these; a numpy array
// that numpy summarised ("...", more than 1000 items) is refused.
std::vector<std::string> parse_list_cell(const std::string& cell);

}  // namespace mf::eval
