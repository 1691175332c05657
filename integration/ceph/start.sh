#!/usr/bin/env bash
# A throwaway single-node Ceph cluster for volback's Ceph tests.
#
#   integration/ceph/start.sh start DIR   # start (or reuse) a cluster in DIR
#   integration/ceph/start.sh stop DIR    # stop exactly the daemons it started
#   integration/ceph/start.sh purge DIR   # stop, then remove DIR
#   (VOLBACK_CEPH_MEMSTORE_BYTES sets the OSD's capacity, default 4 GiB)
#   integration/ceph/start.sh run DIR CMD...
#       runs CMD with DIR/env sourced: in the cluster VOLBACK_CEPH_DIR
#       already names (a running one), or else in one it starts in DIR
#       and stops when CMD ends, however CMD ends. Exits with CMD's status.
#
# One mon and one OSD (memstore: the fastest start, data lives in the OSD's
# memory and is gone at stop), no mgr, cephx on, bound to 127.0.0.1 on free
# ports. Nothing outside DIR is touched, so several clusters (one per
# worktree) can run side by side. `start` waits until both pools answer a
# write, then writes:
#
#   DIR/ceph.conf   the cluster's configuration (client.admin's keyring named in it)
#   DIR/keyring     mon. and client.admin keys
#   DIR/env         `source` it: CEPH_CONF, VOLBACK_CEPH_* (what the tests read)
#
# Pools: $POOL (repository tests; each test uses its own RADOS namespace)
# and rbd (initialised for RBD images).
set -euo pipefail

POOL=volback-test
RBD_POOL=rbd
PG=8
MAX_OBJECT=$((32 << 20)) # osd_max_object_size: small, so tests can reach it
# The OSD's capacity: memstore holds everything in the OSD's memory.
# make bench-ceph raises it for W7's 4 GiB images.
MEMSTORE_BYTES=${VOLBACK_CEPH_MEMSTORE_BYTES:-$((4 << 30))}

usage() {
  echo "usage: $0 start|stop|purge DIR, or $0 run DIR COMMAND..." >&2
  exit 2
}
(($# >= 2)) || usage
cmd=$1
[[ $cmd == run ]] || (($# == 2)) || usage
mkdir -p "$2"
DIR=$(cd "$2" && pwd)
shift 2
CONF=$DIR/ceph.conf

# Our own configuration only: a caller's CEPH_ARGS or CEPH_CONF never leaks in.
unset CEPH_ARGS
export CEPH_CONF=$CONF

log() { echo "ceph-test: $*" >&2; }
die() {
  log "$*"
  exit 1
}

# pid_of NAME prints the PID from NAME's pid file when that process is alive
# and its command line names this cluster's ceph.conf (a recycled PID or
# another cluster's daemon is never ours).
pid_of() {
  local f=$DIR/run/$1.pid pid
  [[ -s $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  [[ -r /proc/$pid/cmdline ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$CONF" || return 1
  echo "$pid"
}

# stop_daemon NAME: SIGTERM, wait up to 10 s, then SIGKILL.
stop_daemon() {
  local pid
  pid=$(pid_of "$1") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 100); do
    kill -0 "$pid" 2>/dev/null || {
      rm -f "$DIR/run/$1.pid"
      return 0
    }
    sleep 0.1
  done
  log "$1 (pid $pid) ignored SIGTERM for 10 s; killing it"
  kill -KILL "$pid" 2>/dev/null || true
  rm -f "$DIR/run/$1.pid"
}

stop() {
  # An OSD is stopped before its mon: an OSD whose mon is gone waits for
  # an acknowledgement that never comes. A paused (SIGSTOPped) daemon is
  # resumed first, or it could not act on SIGTERM.
  local name pid
  for name in osd.0 mon.a; do
    if pid=$(pid_of "$name"); then kill -CONT "$pid" 2>/dev/null || true; fi
    stop_daemon "$name"
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_for WHAT SECONDS COMMAND...: retries COMMAND until it succeeds.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || die "$what not ready after ${secs}s (logs in $DIR/log)"
    sleep 0.2
  done
}

osd_up() {
  ceph osd stat -f json | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["num_up_osds"]==1 and d["num_in_osds"]==1 else 1)'
}

pool_answers() {
  echo ok | rados -p "$1" put volback-ready - && rados -p "$1" rm volback-ready
}

write_conf() {
  local fsid=$1 p2=$2 p1=$3
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:$p2,v1:127.0.0.1:$p1]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
keyring = $DIR/keyring
run dir = $DIR/run
crash dir = $DIR/crash
log to stderr = false
err to stderr = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = $PG
osd pool default pgp num = $PG
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon warn on insecure global id reclaim allowed = false
osd max object size = $MAX_OBJECT
ms async op threads = 2

[mon]
mon data = $DIR/\$name
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
mon cluster log file = $DIR/log/cluster.log

[osd]
osd data = $DIR/\$name
keyring = $DIR/\$name/keyring
log file = $DIR/log/\$name.log
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
osd objectstore = memstore
memstore device bytes = $MEMSTORE_BYTES
osd op num shards = 1
osd op num threads per shard = 2
osd max object name len = 256
osd max object namespace len = 64
EOF
}

start() {
  if pid_of mon.a >/dev/null && pid_of osd.0 >/dev/null && [[ -s $DIR/env ]]; then
    log "cluster in $DIR already running"
    return 0
  fi
  STARTED=1
  # A half-started or crashed cluster is replaced by a fresh one.
  stop
  rm -rf "${DIR:?}"/{mon.a,osd.0,run,log,crash,env,keyring,monmap,ceph.conf}
  mkdir -p "$DIR"/{run,log,crash,osd.0}
  local t0=$EPOCHREALTIME
  elapsed() { python3 -c "print(f'{$EPOCHREALTIME - $t0:.1f}s')"; }
  local fsid p2 p1
  fsid=$(cat /proc/sys/kernel/random/uuid)
  p2=$(free_port)
  p1=$(free_port)
  while [[ $p1 == "$p2" ]]; do p1=$(free_port); done
  write_conf "$fsid" "$p2" "$p1"

  ceph-authtool --create-keyring "$DIR/keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool "$DIR/keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *' >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$p2,v1:127.0.0.1:$p1]" "$DIR/monmap" >/dev/null
  ceph-mon -c "$CONF" --mkfs -i a --monmap "$DIR/monmap" --keyring "$DIR/keyring" >"$DIR/log/mkfs-mon.log" 2>&1 ||
    die "ceph-mon --mkfs failed: $(tail -3 "$DIR/log/mkfs-mon.log")"
  ceph-mon -c "$CONF" -i a >"$DIR/log/mon.a.out" 2>&1 || die "ceph-mon did not start: $(tail -3 "$DIR/log/mon.a.out")"
  wait_for "mon" 30 ceph -s
  log "mon answers after $(elapsed)"

  local uuid secret id
  uuid=$(cat /proc/sys/kernel/random/uuid)
  secret=$(ceph-authtool --gen-print-key)
  id=$(echo "{\"cephx_secret\": \"$secret\"}" | ceph osd new "$uuid" -i -)
  [[ $id == 0 ]] || die "ceph osd new gave id '$id', expected 0"
  ceph-authtool --create-keyring "$DIR/osd.0/keyring" --name osd.0 --add-key "$secret" >/dev/null
  ceph-osd -c "$CONF" -i 0 --mkfs --osd-uuid "$uuid" >"$DIR/log/mkfs-osd.log" 2>&1 ||
    die "ceph-osd --mkfs failed: $(tail -3 "$DIR/log/mkfs-osd.log")"
  ceph-osd -c "$CONF" -i 0 >"$DIR/log/osd.0.out" 2>&1 || die "ceph-osd did not start: $(tail -3 "$DIR/log/osd.0.out")"
  wait_for "osd.0" 60 osd_up
  log "osd.0 up after $(elapsed)"

  ceph osd pool create "$POOL" $PG >/dev/null 2>&1
  ceph osd pool application enable "$POOL" volback >/dev/null 2>&1
  ceph osd pool create "$RBD_POOL" $PG >/dev/null 2>&1
  log "pools created after $(elapsed)"
  wait_for "pool $POOL" 60 pool_answers "$POOL"
  wait_for "pool $RBD_POOL" 60 pool_answers "$RBD_POOL"
  log "pools answer after $(elapsed)"
  rbd pool init "$RBD_POOL"

  cat >"$DIR/env" <<EOF
# Written by integration/ceph/start.sh: the throwaway test cluster in $DIR.
unset CEPH_ARGS
export CEPH_CONF=$CONF
export VOLBACK_CEPH_DIR=$DIR
export VOLBACK_CEPH_CONF=$CONF
export VOLBACK_CEPH_USER=admin
export VOLBACK_CEPH_POOL=$POOL
export VOLBACK_CEPH_RBD_POOL=$RBD_POOL
EOF
  log "cluster up after $(elapsed): source $DIR/env"
}

# run COMMAND...: see the top of this file.
run() {
  (($#)) || usage
  if [[ -n ${VOLBACK_CEPH_DIR:-} && -s $VOLBACK_CEPH_DIR/env ]] && DIR=$VOLBACK_CEPH_DIR CONF=$VOLBACK_CEPH_DIR/ceph.conf pid_of osd.0 >/dev/null; then
    # shellcheck disable=SC1091
    . "$VOLBACK_CEPH_DIR/env"
    exec "$@"
  fi
  local t rc=0
  STARTED=0
  trap '((STARTED)) && stop' EXIT
  trap 'exit 130' INT TERM
  start
  ((STARTED)) || log "using the cluster already running in $DIR (it stays up)"
  # shellcheck disable=SC1091
  . "$DIR/env"
  "$@" || rc=$?
  trap - EXIT
  if ((STARTED)); then
    t=$EPOCHREALTIME
    stop
    log "cluster stopped in $(python3 -c "print(f'{$EPOCHREALTIME - $t:.1f}s')")"
  fi
  return $rc
}

case $cmd in
start) start ;;
stop) stop ;;
run) run "$@" ;;
purge)
  stop
  rm -rf "$DIR"
  ;;
*) usage ;;
esac
