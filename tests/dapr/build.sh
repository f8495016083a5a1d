#!/bin/sh
# Builds the real-Dapr programs the tests and benchmarks run, from Dapr's published Go module at
# the release pinned in tests/dapr/go.mod (the one place that names the version):
#   daprd              Dapr's sidecar (-tags stablecomponents: mDNS name resolution, no panic)
#   sentry             Dapr's own sentry, the control and the benchmark anchor
#   placement, scheduler, operator, injector
#                      Dapr's other control-plane programs (they get their certificates from sentry)
#   helm               the Helm CLI, from its own published module pinned in tests/helm/go.mod,
#                      to render Dapr's chart (charts/dapr in the Dapr module; see chart-dir)
#   chart-dir          a text file: the path of Dapr's chart in Go's module cache
#   sentry-suite.test  Dapr's sentry integration cases, compiled (tests/dapr/suite)
#   loadgen            grpc-go load generator for the benchmark (tests/dapr/loadgen)
#   tlscheck           verifies served or issued certificates with Go's crypto/tls and crypto/x509
#                      (tests/dapr/tlscheck; the control-plane tests)
#   oidccheck          an OIDC relying party (coreos/go-oidc): discovery, JWKS, token verification
# into $SENTRY_DAPR_BIN (default ~/.cache/sentry-dapr/<version>), outside the tree. Go's module
# and build caches make a rebuild cheap; a stamp of the inputs (go.mod, go.sum, our Go sources,
# the Go version) skips even the link step when nothing changed. Prints the directory.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
script=tests/dapr/build.sh
. ../go-build.sh

go_required "Dapr's programs"
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
version=$(go list -m -f '{{.Version}}' github.com/dapr/dapr)
out=$(go_cache_dir SENTRY_DAPR_BIN sentry-dapr "$version")

control_plane="placement scheduler operator injector"
helpers=""
for helper in loadgen tlscheck jwtcheck oidccheck; do
  [ -d "$helper" ] && helpers="$helpers $helper"
done
stamp=$( (go version; cat go.mod go.sum ../helm/go.mod ../helm/go.sum; find suite $helpers -name '*.go' | sort | xargs cat) | sha256sum | cut -d' ' -f1)
# shellcheck disable=SC2086 # word lists
if go_up_to_date "$out" "$stamp" daprd sentry sentry-suite.test helm $control_plane $helpers; then
  echo "$out"
  exit 0
fi

go_build_start "$out" "building Dapr $version programs into $out (first run downloads about 1 GB of modules)"
go build -o "$out/sentry" github.com/dapr/dapr/cmd/sentry
go build -tags stablecomponents -o "$out/daprd" github.com/dapr/dapr/cmd/daprd
for program in $control_plane; do
  go build -o "$out/$program" "github.com/dapr/dapr/cmd/$program"
done
go test -c -o "$out/sentry-suite.test" ./suite
(cd ../helm && go build -o "$out/helm" helm.sh/helm/v4/cmd/helm)
echo "$(go list -m -f '{{.Dir}}' github.com/dapr/dapr)/charts/dapr" >"$out/chart-dir"
for helper in $helpers; do
  go build -o "$out/$helper" "./$helper"
done
go_build_done "$out" "$stamp"
