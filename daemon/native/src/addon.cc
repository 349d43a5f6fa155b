// Module entry: the BpfObject class and the process-wide kernel helpers.
#include <malloc.h>
#include <napi.h>
#include <sys/mman.h>

#include <cerrno>
#include <cstdint>

#include "bpf_object.h"
#include "errors.h"
#include "kernel.h"

namespace gotrail {
namespace {

// JS thread. The probes load trivial programs once and are cached, so the
// first call costs a few hundred microseconds and later calls nothing.
Napi::Value KernelFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Object o = Napi::Object::New(env);
  o.Set("uprobeMulti", UprobeMultiSupported());
  o.Set("bpfStatsEnabled", BpfStatsEnabled());
  o.Set("lockdown", LockdownMode());
  o.Set("probeWriteUser", ProbeWriteUserAllowed());
  return o;
}

// JS thread.
Napi::Value EnableStats(const Napi::CallbackInfo& info) {
  return Napi::Boolean::New(info.Env(), EnableRunTimeStats());
}

// JS thread. glibc returns freed memory at the top of the main heap on its
// own, but free pages inside the arenas (left by start-up's bursts of
// analysis and module loading) stay resident until malloc_trim, which
// gives each whole free page back (MADV_DONTNEED). Returns the arenas'
// {heapBytes (obtained from the system), freeBytes (free inside them)}
// measured after the trim, so a caller can report what is left.
Napi::Value MallocTrim(const Napi::CallbackInfo& info) {
  malloc_trim(0);
  struct mallinfo2 mi = mallinfo2();
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("heapBytes", static_cast<double>(mi.arena + mi.hblkhd));
  o.Set("freeBytes", static_cast<double>(mi.fordblks));
  return o;
}

#ifndef MADV_PAGEOUT
#define MADV_PAGEOUT 21
#endif

// JS thread. Asks the kernel to reclaim the resident pages of each
// [start, start + length) range of this process (madvise MADV_PAGEOUT,
// Linux >= 5.4): clean file pages leave memory and are read again from the
// file on their next use. The kernel skips pages that another process also
// maps, so this never takes memory from anyone else. `ranges` is a flat
// array [start0, length0, start1, length1, ...] of page-aligned numbers
// (user addresses fit a double's 53 bits). Returns {advised: ranges the
// kernel took, errno: the first failure's errno or 0}; never throws for a
// refused range (an older kernel answers EINVAL).
Napi::Value PageOut(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsArray()) {
    Napi::TypeError::New(env, "pageOut(ranges): ranges must be an array of numbers")
        .ThrowAsJavaScriptException();
    return env.Undefined();
  }
  Napi::Array a = info[0].As<Napi::Array>();
  uint32_t advised = 0;
  int first_errno = 0;
  for (uint32_t i = 0; i + 1 < a.Length(); i += 2) {
    auto start = static_cast<uintptr_t>(a.Get(i).As<Napi::Number>().Int64Value());
    auto length = static_cast<size_t>(a.Get(i + 1).As<Napi::Number>().Int64Value());
    if (madvise(reinterpret_cast<void*>(start), length, MADV_PAGEOUT) == 0) {
      advised++;
    } else if (first_errno == 0) {
      first_errno = errno;
    }
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("advised", advised);
  o.Set("errno", first_errno);
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();
  exports.Set("BpfObject", BpfObject::Define(env));
  exports.Set("kernelFeatures", Napi::Function::New<KernelFeatures>(env, "kernelFeatures"));
  exports.Set("enableStats", Napi::Function::New<EnableStats>(env, "enableStats"));
  exports.Set("mallocTrim", Napi::Function::New<MallocTrim>(env, "mallocTrim"));
  exports.Set("pageOut", Napi::Function::New<PageOut>(env, "pageOut"));
  return exports;
}

}  // namespace
}  // namespace gotrail

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return gotrail::Init(env, exports);
}

NODE_API_MODULE(gotrail_native, InitModule)
