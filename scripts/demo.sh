#!/usr/bin/env bash
# The main job on the embedded default: back up an ext4 image holding files
# into the default repository under the volback home, list it, restore it to
# a new volume and prove the bytes identical.
set -euo pipefail
VOLBACK=${VOLBACK:-./volback}
work=$(mktemp -d /var/tmp/volback-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT

echo "== making a 256 MiB ext4 image with some files"
mkdir -p "$work/root/docs" "$work/root/data"
for i in $(seq 1 40); do seq 1 $((i * 2000)) > "$work/root/docs/file$i.txt"; done
head -c 64M /dev/urandom > "$work/root/data/random.bin"
truncate -s 256M "$work/disk.img"
mkfs.ext4 -q -F -d "$work/root" "$work/disk.img"

name="demo-$(date +%s)"
echo "== volback manage / backup-create / backup-list (home: ${VOLBACK_HOME:-default})"
$VOLBACK manage --name "$name" "$work/disk.img"
$VOLBACK backup-create --name "$name-full" "$name"
$VOLBACK backup-list --volume-id "$name"

echo "== restoring to a new volume"
$VOLBACK -f json backup-restore --name "$name-restored" "$name-full"
restored=$($VOLBACK -f json show "$name-restored" | sed -n 's/^  "path": "\(.*\)",$/\1/p')

echo "== comparing bytes"
a=$(sha256sum < "$work/disk.img" | cut -d' ' -f1)
b=$(sha256sum < "$restored" | cut -d' ' -f1)
echo "original  $a"
echo "restored  $b"
[[ "$a" == "$b" ]] || { echo "demo: FAILED: restored image differs" >&2; exit 1; }
echo "demo: OK, restored image is byte-identical ($restored)"

# Leave the repository and catalog as they are (they are the point), but do
# not keep demo volumes around, nor the demo's backup: each project has a
# quota of 10 backups, which repeated demos would otherwise fill.
$VOLBACK delete "$name-restored" >/dev/null
$VOLBACK backup-delete "$name-full" >/dev/null
$VOLBACK delete "$name" >/dev/null
