#!/usr/bin/env bash
# Runs every Go fuzz target briefly (FUZZTIME, default 10s each); the
# committed seeds (f.Add and testdata/fuzz) also run in plain `go test`.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
t=${FUZZTIME:-10s}
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  pkg=./$(dirname "${f#./}")
  for fn in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
    echo "fuzz: $pkg $fn ($t)"
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" "$pkg" >/tmp/volback-fuzz.log 2>&1 || { cat /tmp/volback-fuzz.log; exit 1; }
  done
done
