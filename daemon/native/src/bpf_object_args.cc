#include "bpf_object_args.h"

#include <errno.h>

#include "errors.h"

namespace gotrail {

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const std::string& op,
                      const char* what) {
  if (i >= info.Length() || !info[i].IsString()) {
    Throw(info.Env(), op, EINVAL, std::string(what) + " must be a string");
  }
  return info[i].As<Napi::String>().Utf8Value();
}

Bytes BytesArg(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what) {
  if (i < info.Length() && info[i].IsTypedArray()) {
    Napi::TypedArray ta = info[i].As<Napi::TypedArray>();
    if (ta.TypedArrayType() == napi_uint8_array) {
      Napi::Uint8Array u = info[i].As<Napi::Uint8Array>();
      return {u.Data(), u.ByteLength()};
    }
  }
  Throw(info.Env(), op, EINVAL, std::string(what) + " must be a Buffer or Uint8Array");
}

void RequireSize(Napi::Env env, const std::string& op, const char* what, size_t got, size_t want) {
  if (got != want) {
    Throw(env, op, EINVAL,
          std::string(what) + " is " + std::to_string(got) + " bytes, the map wants " +
              std::to_string(want));
  }
}

Napi::Object OptionalObject(const Napi::CallbackInfo& info, size_t i, const std::string& op,
                            const char* what) {
  if (i >= info.Length() || info[i].IsUndefined() || info[i].IsNull()) {
    return Napi::Object::New(info.Env());
  }
  if (!info[i].IsObject()) Throw(info.Env(), op, EINVAL, std::string(what) + " must be an object");
  return info[i].As<Napi::Object>();
}

int64_t IntOption(Napi::Env env, Napi::Object o, const char* key, int64_t fallback, int64_t min,
                  int64_t max, const std::string& op) {
  Napi::Value v = o.Get(key);
  if (v.IsUndefined()) return fallback;
  if (!v.IsNumber()) Throw(env, op, EINVAL, std::string(key) + " must be a number");
  double d = v.As<Napi::Number>().DoubleValue();
  if (d != static_cast<double>(static_cast<int64_t>(d)) || d < static_cast<double>(min) ||
      d > static_cast<double>(max)) {
    Throw(env, op, EINVAL,
          std::string(key) + " must be an integer in [" + std::to_string(min) + ", " +
              std::to_string(max) + "]");
  }
  return static_cast<int64_t>(d);
}

}  // namespace gotrail
