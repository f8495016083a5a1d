#!/bin/sh
# Makes sure the tools the test suite uses as independent references are present:
# the openssl CLI, kubectl (a real client for the fake Kubernetes API), and Debian's
# /usr/bin/python3 with grpcio and cryptography (the interoperability client). Installs
# them with apt-get when run as root on Debian; otherwise says what is missing and exits 1.
# Run by `deno task test`.
set -eu

missing=""
command -v openssl >/dev/null 2>&1 || missing="$missing openssl"
command -v kubectl >/dev/null 2>&1 || missing="$missing kubectl"
if ! /usr/bin/python3 -c "import grpc, cryptography" >/dev/null 2>&1; then
  missing="$missing python3-grpcio python3-cryptography"
fi
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "tests/setup.sh: installing$missing (Debian packages)" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  # shellcheck disable=SC2086
  apt-get install -y -qq $missing >/dev/null
  exit 0
fi
echo "tests/setup.sh: missing$missing; install them (Debian: apt-get install$missing) and retry" >&2
exit 1
