// Module entry: the BpfObject class and the process-wide kernel helpers.
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

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  InstallLibbpfPrint();
  exports.Set("BpfObject", BpfObject::Define(env));
  exports.Set("kernelFeatures", Napi::Function::New<KernelFeatures>(env, "kernelFeatures"));
  exports.Set("enableStats", Napi::Function::New<EnableStats>(env, "enableStats"));
  return exports;
}

}  // namespace
}  // namespace gotrail

static Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  return gotrail::Init(env, exports);
}

NODE_API_MODULE(gotrail_native, InitModule)
