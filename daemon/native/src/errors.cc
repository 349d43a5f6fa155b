#include "errors.h"

#include <bpf/libbpf.h>

#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace gotrail {

namespace {

// Captures nest (an operation may call a helper that captures too); the
// innermost one receives the output.
thread_local LibbpfLogCapture* t_capture = nullptr;

// Bounded so that a runaway verifier log (it can be megabytes) does not
// grow without limit; only the tail is ever quoted.
constexpr size_t kMaxCapturedLines = 400;

bool DebugRequested() {
  const char* v = std::getenv("GOTRAIL_LIBBPF_DEBUG");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

// Runs on whichever thread called into libbpf: the JS thread for open, load,
// attach and map operations, the poll thread for ring buffer consumption.
int LibbpfPrint(enum libbpf_print_level level, const char* fmt, va_list args) {
  static const bool debug = DebugRequested();
  if (level == LIBBPF_DEBUG && !debug) return 0;
  char small[2048];
  char* buf = small;
  va_list copy;
  va_copy(copy, args);
  int n = std::vsnprintf(small, sizeof small, fmt, copy);
  va_end(copy);
  if (n < 0) return 0;
  // libbpf prints a failed program's whole verifier log in one call, and
  // its verdict is the last line: a longer message is formatted again whole
  std::string big;
  if (static_cast<size_t>(n) >= sizeof small) {
    big.resize(static_cast<size_t>(n) + 1);
    std::vsnprintf(big.data(), big.size(), fmt, args);
    buf = big.data();
  }
  if (t_capture != nullptr && level != LIBBPF_DEBUG) {
    t_capture->Append(buf);
  } else if (level == LIBBPF_WARN || debug) {
    std::fprintf(stderr, "libbpf: %s", buf);
  }
  return n;
}

}  // namespace

std::string ErrnoName(int err) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 32))
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
#endif
  return "E" + std::to_string(err);
}

Napi::Error MakeError(Napi::Env env, const std::string& operation, int err,
                      const std::string& detail) {
  if (err < 0) err = -err;
  char sbuf[256];
  // GNU strerror_r returns the message, which may or may not be sbuf.
  const char* text = strerror_r(err, sbuf, sizeof sbuf);
  std::string msg = operation + ": " + text + " (errno " + std::to_string(err) + ")";
  if (!detail.empty()) msg += ": " + detail;
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("operation", Napi::String::New(env, operation));
  return e;
}

void Throw(Napi::Env env, const std::string& operation, int err, const std::string& detail) {
  throw MakeError(env, operation, err, detail);
}

void ThrowWithLog(Napi::Env env, const std::string& operation, int err, const std::string& log,
                  const std::string& detail) {
  Napi::Error e = MakeError(env, operation, err, detail);
  if (!log.empty()) {
    e.Set("message", Napi::String::New(env, e.Message() + "\n" + log));
    e.Set("log", Napi::String::New(env, log));
  }
  throw e;
}

void InstallLibbpfPrint() { libbpf_set_print(LibbpfPrint); }

LibbpfLogCapture::LibbpfLogCapture() : previous_(t_capture) { t_capture = this; }

LibbpfLogCapture::~LibbpfLogCapture() { t_capture = previous_; }

void LibbpfLogCapture::Append(const char* text) {
  partial_ += text;
  size_t start = 0;
  for (size_t nl; (nl = partial_.find('\n', start)) != std::string::npos; start = nl + 1) {
    lines_.emplace_back(partial_, start, nl - start);
  }
  partial_.erase(0, start);
  if (lines_.size() > kMaxCapturedLines) {
    lines_.erase(lines_.begin(), lines_.end() - kMaxCapturedLines);
  }
}

std::string LibbpfLogCapture::Tail(size_t max_lines) const {
  std::vector<std::string> all(lines_);
  if (!partial_.empty()) all.push_back(partial_);
  size_t from = all.size() > max_lines ? all.size() - max_lines : 0;
  std::string out;
  for (size_t i = from; i < all.size(); i++) {
    if (!out.empty()) out += '\n';
    out += all[i];
  }
  return out;
}

}  // namespace gotrail
