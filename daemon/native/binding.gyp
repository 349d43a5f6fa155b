{
  "targets": [
    {
      "target_name": "gotrail_native",
      "sources": [
        "src/addon.cc",
        "src/bpf_object.cc",
        "src/bpf_object_args.cc",
        "src/bpf_object_links.cc",
        "src/bpf_object_maps.cc",
        "src/errors.cc",
        "src/kernel.cc",
        "src/ring_buffer.cc"
      ],
      "include_dirs": ["../../node_modules/node-addon-api"],
      "defines": [
        "NAPI_VERSION=8",
        "NAPI_CPP_EXCEPTIONS",
        "NODE_ADDON_API_DISABLE_DEPRECATED"
      ],
      "cflags!": ["-fno-exceptions"],
      "cflags_cc!": ["-fno-exceptions", "-std=gnu++20"],
      "cflags_cc": [
        "-std=c++17",
        "-fexceptions",
        "-Wall",
        "-Wextra",
        "-Wno-missing-field-initializers",
        "<!@(pkg-config --cflags libbpf)"
      ],
      "libraries": ["<!@(pkg-config --libs libbpf)"]
    },
    {
      "target_name": "gotrail_calibrate",
      "type": "executable",
      "sources": ["src/calibrate.c"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}
