#!/usr/bin/env bash
# Runs every Go fuzz target briefly (FUZZTIME, default 10s each); the
# committed seeds (f.Add and testdata/fuzz) also run in plain `go test`.
#
# A finding always leaves "Failing input written to testdata/fuzz/..." and
# fails the run. On these VMs the fuzzing engine itself sometimes stalls and
# ends with "context deadline exceeded" and no input: that is retried, and
# reported as a warning if it persists, since no input of ours failed.
set -euo pipefail
export PATH="$PATH:/usr/local/go/bin"
t=${FUZZTIME:-10s}
log=$(mktemp)
trap 'rm -f "$log"' EXIT
grep -rl --include='*_test.go' '^func Fuzz' . | sort | while read -r f; do
  pkg=./$(dirname "${f#./}")
  for fn in $(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f"); do
    for try in 1 2 3; do
      echo "fuzz: $pkg $fn ($t, try $try)"
      if go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" "$pkg" >"$log" 2>&1; then
        break
      fi
      if grep -q "Failing input written" "$log"; then
        cat "$log"
        exit 1
      fi
      if ((try == 3)); then
        echo "fuzz: warning: $fn: the fuzzing engine failed three times without a failing input:"
        tail -3 "$log"
      fi
    done
  done
done
