// Module entry: the BpfObject class and the process-wide kernel helpers.
#include <malloc.h>
#include <napi.h>

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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();
  exports.Set("BpfObject", BpfObject::Define(env));
  exports.Set("kernelFeatures", Napi::Function::New<KernelFeatures>(env, "kernelFeatures"));
  exports.Set("enableStats", Napi::Function::New<EnableStats>(env, "enableStats"));
  exports.Set("mallocTrim", Napi::Function::New<MallocTrim>(env, "mallocTrim"));
  return exports;
}

}  // namespace
}  // namespace gotrail

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return gotrail::Init(env, exports);
}

NODE_API_MODULE(gotrail_native, InitModule)
