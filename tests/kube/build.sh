#!/bin/sh
# Builds a real Kubernetes API server and etcd for the tests that check our sentry against a
# Kubernetes API that enforces RBAC (tests/helpers/real_kube_apiserver.ts), from published Go
# modules at the releases pinned in tests/kube/go.mod (the one place that names the versions):
#   kube-apiserver  k8s.io/kubernetes/cmd/kube-apiserver (a `tool` line of go.mod; the replace
#                   lines map the k8s.io staging modules it names as v0.0.0 to their release)
#   etcd            our own small main (tests/kube/etcd) around go.etcd.io/etcd/server/v3/embed
#   kubectl         k8s.io/kubernetes/cmd/kubectl (another `tool` line): the client the tests use
#                   when the machine has none (Debian has no package named kubectl;
#                   tests/setup.sh links this one into /usr/local/bin)
# into $SENTRY_KUBE_BIN (default ~/.cache/sentry-kube/<kubernetes version>), outside the tree.
# Go's module and build caches make a rebuild cheap; a stamp of the inputs (go.mod, go.sum, our
# Go sources, the Go version) skips even the link step when nothing changed. Prints the directory.
# Cost measured with empty Go caches on 2 CPUs (kubernetes v1.36.3, etcd v3.6.13): 85 MB of module
# zips downloaded (550 MB unpacked), 2.2 GB of build cache, 5 min 20 s; unchanged inputs: 0 s.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
cd "$here"
script=tests/kube/build.sh
. ../go-build.sh

go_required kube-apiserver
export CGO_ENABLED=0 GOFLAGS=-mod=readonly
version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
out=$(go_cache_dir SENTRY_KUBE_BIN sentry-kube "$version")

stamp=$( (go version; cat go.mod go.sum; find etcd -name '*.go' | sort | xargs cat) | sha256sum | cut -d' ' -f1)
if go_up_to_date "$out" "$stamp" kube-apiserver etcd kubectl; then
  echo "$out"
  exit 0
fi

go_build_start "$out" "building kube-apiserver $version, kubectl and etcd into $out"
minor=$(echo "$version" | cut -d. -f2)
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
go build -ldflags "$ldflags" -o "$out/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver
go build -ldflags "$ldflags" -o "$out/kubectl" k8s.io/kubernetes/cmd/kubectl
go build -ldflags "-s -w" -o "$out/etcd" ./etcd
go_build_done "$out" "$stamp"
