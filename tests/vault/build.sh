#!/bin/sh
# Builds a real HashiCorp Vault server for the tests that check the Vault store and our fake Vault
# (tests/fakes/vault.ts) against it (tests/helpers/real_vault.ts), from the published Go module at
# the release pinned in tests/vault/go.mod (the one place that names the version), into
# $SENTRY_VAULT_BIN (default ~/.cache/sentry-vault/<vault version>), outside the tree.
# Go's module and build caches make a rebuild cheap; a stamp of the inputs (go.mod, go.sum, the Go
# version) skips even the link step when nothing changed. Prints the directory.
# Cost measured with empty Go caches on 2 CPUs (Vault v1.21.0): 618 MB of module zips downloaded
# (3.0 GB unpacked) in 65 s, then 13 min 15 s of compiling (with other work on the machine);
# unchanged inputs: 0 s; a relink after a Go update: ~20 s. The binary is ~360 MB.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
script=tests/vault/build.sh
. ../go-build.sh

go_required Vault
export GOFLAGS=-mod=readonly
version=$(go list -m -f '{{.Version}}' github.com/hashicorp/vault)
out=$(go_cache_dir SENTRY_VAULT_BIN sentry-vault "$version")

stamp=$( (go version; cat go.mod go.sum) | sha256sum | cut -d' ' -f1)
if go_up_to_date "$out" "$stamp" vault; then
  echo "$out"
  exit 0
fi

go_build_start "$out" "building Vault $version into $out"
go build -trimpath -ldflags "-s -w" -o "$out/vault" github.com/hashicorp/vault
go_build_done "$out" "$stamp"
