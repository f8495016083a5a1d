#!/bin/sh
# Makes sure the tools the test suite uses as independent references are present:
# the openssl CLI, kubectl (a real client for the fake Kubernetes API), and Debian's
# /usr/bin/python3 with grpcio and cryptography (the interoperability client). Run by
# `deno task test`. As root on Debian it installs each missing Debian package with its own
# apt-get call (one that fails does not keep the others from being installed), and, since
# Debian has no package named kubectl, builds kubectl from the Go module pinned in
# tests/kube/go.mod (tests/kube/build.sh, which the test task runs anyway) and links it into
# /usr/local/bin. Otherwise, or when something is still missing, it says what and exits 1.
# SENTRY_SETUP_BIN_DIR overrides /usr/local/bin (for tests of this script).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin_dir=${SENTRY_SETUP_BIN_DIR:-/usr/local/bin}

python_ok() { /usr/bin/python3 -c "import grpc, cryptography" >/dev/null 2>&1; }
# The Debian packages still missing, one word each.
missing_packages() {
  command -v openssl >/dev/null 2>&1 || printf ' openssl'
  python_ok || printf ' python3-grpcio python3-cryptography'
}

packages=$(missing_packages)
have_kubectl=yes
command -v kubectl >/dev/null 2>&1 || have_kubectl=no
[ -z "$packages" ] && [ "$have_kubectl" = yes ] && exit 0

failed=""
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1 && [ -n "$packages" ]; then
  echo "tests/setup.sh: installing$packages (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || echo "tests/setup.sh: apt-get update failed" >&2
  for package in $packages; do
    apt-get install -y -qq "$package" >/dev/null ||
      failed="$failed $package"
  done
  packages=$(missing_packages)
fi

if [ "$have_kubectl" = no ]; then
  if [ "$(id -u)" = "0" ] && command -v go >/dev/null 2>&1; then
    echo "tests/setup.sh: kubectl not found; building it from tests/kube/go.mod" >&2
    if kube_bin=$(sh "$here/kube/build.sh") && [ -x "$kube_bin/kubectl" ]; then
      mkdir -p "$bin_dir"
      ln -sf "$kube_bin/kubectl" "$bin_dir/kubectl"
      echo "tests/setup.sh: linked $bin_dir/kubectl -> $kube_bin/kubectl" >&2
    fi
  fi
  command -v kubectl >/dev/null 2>&1 || packages="$packages kubectl"
fi

[ -z "$packages" ] && exit 0
[ -n "$failed" ] && echo "tests/setup.sh: apt-get could not install:$failed" >&2
echo "tests/setup.sh: missing$packages; install them (Debian: apt-get install of the packages;" \
  "kubectl: 'sh tests/kube/build.sh' builds one, put its directory on PATH) and retry" >&2
exit 1
