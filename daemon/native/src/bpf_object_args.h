// Argument checks shared by BpfObject's methods. Every function runs on the
// JS thread of the call and throws a JS error (see errors.h) naming `op`
// when an argument is missing or of the wrong type or range.
#pragma once

#include <napi.h>

#include <cstddef>
#include <cstdint>
#include <string>

namespace gotrail {

// info[i] as a string; `what` names the argument in the error.
std::string StringArg(const Napi::CallbackInfo& info, size_t i, const std::string& op,
                      const char* what);

// A view of a Buffer or Uint8Array argument, valid for the duration of the call.
struct Bytes {
  const uint8_t* data;
  size_t size;
};

Bytes BytesArg(const Napi::CallbackInfo& info, size_t i, const std::string& op, const char* what);

// Throws EINVAL unless a key or value is exactly the size the map wants.
void RequireSize(Napi::Env env, const std::string& op, const char* what, size_t got, size_t want);

// info[i] as an object; an empty one when absent (undefined or null).
Napi::Object OptionalObject(const Napi::CallbackInfo& info, size_t i, const std::string& op,
                            const char* what);

// Reads an optional integer option in [min, max]; `fallback` when absent.
int64_t IntOption(Napi::Env env, Napi::Object o, const char* key, int64_t fallback, int64_t min,
                  int64_t max, const std::string& op);

}  // namespace gotrail
