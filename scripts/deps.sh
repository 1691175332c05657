#!/usr/bin/env bash
# Installs what volback builds, tests and benchmarks with, on Debian.
# Idempotent: installs only what is missing. Needs root (or sudo).
set -euo pipefail

packages=(
  fuse3           # fusermount3 for `volback mount`
  e2fsprogs       # mkfs.ext4 for the demo and tests
  util-linux      # losetup, mount
  xfsprogs        # mkfs.xfs: the volume tests' reflink filesystem (snapshots by FICLONE)
  qemu-utils      # qemu-nbd: a real QEMU image lock for the in-use tests
  zstd
  zsh             # to check the zsh completion script (make gen, integration tests)
  restic borgbackup python3-llfuse fio   # peers and tools for `make bench` (llfuse: borg mount)
  make ca-certificates
  # A throwaway single-node Ceph cluster (integration/ceph/start.sh) for the
  # rados:// repository tests, and the headers go-ceph's cgo builds against.
  ceph-mon ceph-osd ceph-common librados-dev librbd-dev
  gcc libc6-dev   # cgo
  # The real OpenStack clients the Cinder v3 API tests drive (integration/cinder_test.go).
  python3-cinderclient python3-openstackclient
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  SUDO=""
  [[ $(id -u) -eq 0 ]] || SUDO=sudo
  # Another apt may hold the dpkg lock on a shared machine: wait for it.
  for _ in $(seq 1 120); do
    $SUDO fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1 || break
    sleep 1
  done
  echo "deps: installing ${missing[*]}"
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o DPkg::Lock::Timeout=600 --no-install-recommends "${missing[@]}" >/dev/null
fi

# Go is part of the machine image (/usr/local/go); Debian's golang is too old.
export PATH="$PATH:/usr/local/go/bin"
if ! command -v go >/dev/null; then
  echo "deps: Go 1.26 or newer is needed (expected at /usr/local/go/bin/go); install it and run again" >&2
  exit 1
fi
have=$(go env GOVERSION | sed 's/^go//')
if [[ "$(printf '%s\n' 1.26 "$have" | sort -V | head -1)" != 1.26 ]]; then
  echo "deps: Go $have is too old; volback needs Go 1.26 or newer" >&2
  exit 1
fi
echo "deps: ok (go $have)"
