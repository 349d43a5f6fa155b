// Error reporting shared by every entry point of the addon.
//
// All thrown errors carry the operation that failed, so that TypeScript
// policy code can log "what were we trying to do" without guessing, and the
// errno/code so that it can branch (ESRCH: the process is gone; ENOENT: the
// binary was replaced) without parsing messages.
#pragma once

#include <napi.h>

#include <string>
#include <vector>

namespace gotrail {

// Message: "<operation>: <strerror> (errno N)" followed by ": <detail>" when
// there is one. Properties: errno (number), code ('ENOENT'), operation.
Napi::Error MakeError(Napi::Env env, const std::string& operation, int err,
                      const std::string& detail = "");
[[noreturn]] void Throw(Napi::Env env, const std::string& operation, int err,
                        const std::string& detail = "");

// As Throw, with libbpf's own words (the verifier log on load errors) on
// the lines after the message and in a `log` property.
[[noreturn]] void ThrowWithLog(Napi::Env env, const std::string& operation, int err,
                               const std::string& log, const std::string& detail = "");

// 'ENOENT' for 2; "E<n>" when the C library has no name for it.
std::string ErrnoName(int err);

// libbpf reports through one process-wide print callback. While a capture is
// alive on a thread, libbpf output from that thread is collected so that the
// failing operation can quote it (the verifier log on load errors); output
// from threads without a capture (the ring buffer poll thread) goes to
// stderr when it is a warning.
void InstallLibbpfPrint();

class LibbpfLogCapture {
 public:
  LibbpfLogCapture();
  ~LibbpfLogCapture();
  LibbpfLogCapture(const LibbpfLogCapture&) = delete;
  LibbpfLogCapture& operator=(const LibbpfLogCapture&) = delete;

  // The last max_lines lines, newline-separated; empty when nothing came.
  std::string Tail(size_t max_lines) const;
  void Append(const char* text);

 private:
  std::vector<std::string> lines_;
  std::string partial_;
  LibbpfLogCapture* previous_;
};

}  // namespace gotrail
