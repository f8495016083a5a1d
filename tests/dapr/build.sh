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

if ! command -v go >/dev/null 2>&1; then
  echo "tests/dapr/build.sh: 'go' not found; Go 1.26 or newer is needed to build Dapr's programs" >&2
  exit 1
fi
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
version=$(go list -m -f '{{.Version}}' github.com/dapr/dapr)
out=${SENTRY_DAPR_BIN:-${XDG_CACHE_HOME:-$HOME/.cache}/sentry-dapr/$version}
mkdir -p "$out"

control_plane="placement scheduler operator injector"
stamp=$( (go version; cat go.mod go.sum ../helm/go.mod ../helm/go.sum; find suite loadgen tlscheck jwtcheck oidccheck -name '*.go' 2>/dev/null | sort | xargs cat) | sha256sum | cut -d' ' -f1)
complete=yes
for program in daprd sentry sentry-suite.test helm $control_plane; do
  [ -x "$out/$program" ] || complete=no
done
if [ -f "$out/.stamp" ] && [ "$(cat "$out/.stamp")" = "$stamp" ] && [ $complete = yes ] &&
  { [ ! -d loadgen ] || [ -x "$out/loadgen" ]; } && { [ ! -d tlscheck ] || [ -x "$out/tlscheck" ]; }; then
  echo "$out"
  exit 0
fi

start=$(date +%s)
echo "tests/dapr/build.sh: building Dapr $version programs into $out (first run downloads about 1 GB of modules)" >&2
rm -f "$out/.stamp"
go build -o "$out/sentry" github.com/dapr/dapr/cmd/sentry
go build -tags stablecomponents -o "$out/daprd" github.com/dapr/dapr/cmd/daprd
for program in $control_plane; do
  go build -o "$out/$program" "github.com/dapr/dapr/cmd/$program"
done
go test -c -o "$out/sentry-suite.test" ./suite
(cd ../helm && go build -o "$out/helm" helm.sh/helm/v4/cmd/helm)
echo "$(go list -m -f '{{.Dir}}' github.com/dapr/dapr)/charts/dapr" >"$out/chart-dir"
if [ -d loadgen ]; then go build -o "$out/loadgen" ./loadgen; fi
if [ -d tlscheck ]; then go build -o "$out/tlscheck" ./tlscheck; fi
if [ -d jwtcheck ]; then go build -o "$out/jwtcheck" ./jwtcheck; fi
if [ -d oidccheck ]; then go build -o "$out/oidccheck" ./oidccheck; fi
echo "$stamp" >"$out/.stamp"
echo "tests/dapr/build.sh: built in $(($(date +%s) - start)) s" >&2
echo "$out"
