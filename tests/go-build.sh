# Shared steps of the scripts that build real counterparts from published Go modules
# (tests/dapr/build.sh, tests/kube/build.sh, tests/vault/build.sh); sourced, not run. Each
# script builds into a cache directory outside the tree and skips the whole build when a stamp
# of its inputs (go.mod, go.sum, our Go sources, the Go version) is unchanged and every program
# is there, so that a warm run costs nothing; Go's module and build caches make a rebuild cheap.
# The calling script sets `script` (its name, for messages) before sourcing.

# go_required WHAT: fails with a clear message when Go is missing.
go_required() {
  if ! command -v go >/dev/null 2>&1; then
    echo "$script: 'go' not found; Go 1.26 or newer is needed to build $1" >&2
    exit 1
  fi
}

# go_cache_dir VARIABLE NAME VERSION: prints (and creates) the output directory, $VARIABLE when
# set, else ${XDG_CACHE_HOME:-~/.cache}/NAME/VERSION.
go_cache_dir() {
  eval "dir=\${$1:-}"
  [ -n "$dir" ] || dir=${XDG_CACHE_HOME:-$HOME/.cache}/$2/$3
  mkdir -p "$dir"
  echo "$dir"
}

# go_up_to_date DIR STAMP PROGRAM...: true when DIR's stamp is STAMP and every PROGRAM in DIR
# is executable.
go_up_to_date() {
  dir=$1 stamp=$2
  shift 2
  [ -f "$dir/.stamp" ] && [ "$(cat "$dir/.stamp")" = "$stamp" ] || return 1
  for program in "$@"; do
    [ -x "$dir/$program" ] || return 1
  done
}

# go_build_start DIR MESSAGE: says what is being built and forgets the old stamp, so that an
# interrupted build is redone.
go_build_start() {
  build_started=$(date +%s)
  echo "$script: $2" >&2
  rm -f "$1/.stamp"
}

# go_build_done DIR STAMP: records the stamp, says how long it took, prints DIR.
go_build_done() {
  echo "$2" >"$1/.stamp"
  echo "$script: built in $(($(date +%s) - build_started)) s" >&2
  echo "$1"
}
