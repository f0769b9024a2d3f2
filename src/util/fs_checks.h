// Checks on paths before they are opened or written. (A separate header, not util/fs.h: that one
// is included almost everywhere.)
#pragma once
#include <string>
#include <vector>

namespace mf {

// Inputs are checked to be regular files before they are opened: opening a FIFO with no writer
// blocks forever, and a device can be endless. Throws mf::Error "<path>: no such file" /
// "<path>: is a directory, expected a file" / "<path>: not a regular file" unless `path`
// (symbolic links followed) is a regular file. Never opens the path, so it cannot block.
// Paths that name a stream explicitly (/dev/stdin, /dev/fd/N, /proc/self/fd/N: process
// substitution) are let through.
void require_regular_file(const std::string& path);

// An output directory may replace only a directory (an earlier output): throws mf::Error
// "<path>: exists and is not a directory (not overwritten)" when a file, FIFO or device is at
// `path` (trailing slashes ignored, symbolic links followed). AtomicDir checks this itself;
// commands call it early too, so that nothing is computed for an output that cannot be written.
void refuse_non_directory_output(const std::string& path);

// Whether two paths name the same existing file or directory (symbolic links resolved).
bool same_path(const std::string& a, const std::string& b);

// The checks of a command that writes a new model directory: `out` must not be a file, nor a
// non-empty directory unless `overwrite` (the message names --overwrite), nor any of `inputs`.
void check_model_output_dir(const std::string& out, bool overwrite, const std::vector<std::string>& inputs);

// Removes the leftovers of interrupted runs that wrote `path`: entries of its directory named
// exactly `<basename(path)>.tmp-<pid>-<n>` (the temporary names of AtomicDir and AtomicFile) whose
// <pid> is no running process (kill(pid, 0) fails with ESRCH). Leftovers of live processes (another
// run in progress) and every other name are kept. Logs one line per removal; never throws. An
// earlier output left at `<basename(path)>.previous-<pid>-<n>` by a run killed mid-commit (only on
// filesystems without RENAME_EXCHANGE) is complete: it is reported (a warning), never removed. Called
// by the AtomicDir and AtomicFile constructors. Assumes every writer runs on this host (in this PID
// namespace).
void remove_stale_temporaries(const std::string& path);

}  // namespace mf
