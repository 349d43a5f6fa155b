#!/usr/bin/env python3
"""Writes kubeconform's standalone Kubernetes JSON schemas from the schemas
that the PyPI package kubernetes-validate ships (one file per kind whose
$refs point into a shared _definitions.json): each kind's file gets the
definitions it reaches, under its own $defs.

    k8s-schemas.py WHEEL OUTDIR VERSION...
writes OUTDIR/vVERSION-standalone-strict/KIND-GROUP-VERSION.json
"""
import json
import pathlib
import re
import sys
import zipfile

PREFIX = "kubernetes_validate/kubernetes-json-schema/"
REF = re.compile(r'"\$ref": "(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')


def main() -> None:
    wheel, out, versions = sys.argv[1], pathlib.Path(sys.argv[2]), sys.argv[3:]
    z = zipfile.ZipFile(wheel)
    for v in versions:
        src = f"{PREFIX}v{v}-local-strict/"
        defs = json.loads(z.read(src + "_definitions.json"))["$defs"]
        dst = out / f"v{v}-standalone-strict"
        dst.mkdir(parents=True, exist_ok=True)
        for name in z.namelist():
            if not name.startswith(src) or not name.endswith(".json") or name.endswith("_definitions.json"):
                continue
            text = z.read(name).decode()
            seen: dict[str, object] = {}
            todo = REF.findall(text)
            while todo:
                d = todo.pop()
                if d in seen:
                    continue
                seen[d] = defs[d]
                todo.extend(REF.findall(json.dumps(defs[d], indent=1)))
            schema = json.loads(text.replace('"/api/_definitions.json#/$defs/', '"#/$defs/'))
            if seen:
                schema["$defs"] = seen
            (dst / name[len(src):]).write_text(json.dumps(schema))


main()
