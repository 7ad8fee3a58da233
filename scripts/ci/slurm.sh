#!/usr/bin/env bash
# A throwaway one-node SLURM on localhost for the tests (CI, or a developer's machine as root).
#
#   eval "$(scripts/ci/slurm.sh start)"   # prints `export SLURM_CONF=...; export REPRLAB_SLURM_DIR=...`
#   scripts/ci/slurm.sh stop "$REPRLAB_SLURM_DIR"
#
# No systemd: munged (its own key and socket), then slurmctld and slurmd, all from a config in a
# temporary folder (state, spool, logs, pid files), listening on the loopback only. Accounting is
# off (the runner never asks sacct). `start` waits until sinfo shows the node idle; `stop` ends the
# three daemons by the PIDs they wrote and removes the folder. Needs the Debian packages slurm-wlm
# and munge (`.ci/run` installs them) and root (the daemons run as root, and so do the jobs).
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"  # the daemons live there; a CI user's PATH may lack them

start() {
  local dir; dir="$(mktemp -d "${TMPDIR:-/tmp}/reprlab-slurm.XXXXXX")"
  chmod 0755 "$dir"
  mkdir -p "$dir/munge" "$dir/state" "$dir/spool" "$dir/log"
  chmod 0700 "$dir/munge"
  # munge first: its own key (created here), socket and pid file
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1 count=1024 status=none
  chmod 0400 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.sock" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munge/seed" >&2
  # the node as slurmd sees it, with at most 2 CPUs; memory as the machine has it
  local mem; mem="$(slurmd -C 2>/dev/null | tr ' ' '\n' | sed -n 's/^RealMemory=//p')"
  local cpus; cpus="$(nproc)"; [ "$cpus" -gt 2 ] && cpus=2
  local ctld_port="${REPRLAB_SLURMCTLD_PORT:-6817}" d_port="${REPRLAB_SLURMD_PORT:-6818}"
  cat > "$dir/slurm.conf" <<CONF
ClusterName=reprlab-ci
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.sock
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool/%n
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=600
KillWait=10
NodeName=localhost NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=${mem:-1000} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
CONF
  export SLURM_CONF="$dir/slurm.conf"
  slurmctld -c -f "$SLURM_CONF" >&2
  slurmd -N localhost -f "$SLURM_CONF" >&2
  local i
  for i in $(seq 1 60); do
    if [ "$(sinfo -h -n localhost -o %t 2>/dev/null)" = "idle" ]; then
      echo "export SLURM_CONF=$dir/slurm.conf; export REPRLAB_SLURM_DIR=$dir"
      return 0
    fi
    sleep 0.5
  done
  echo "slurm.sh: the node did not come up idle in 30 s; logs in $dir/log:" >&2
  tail -n 5 "$dir"/log/*.log >&2 || true
  stop "$dir"
  return 1
}

stop() {
  local dir="${1:?usage: slurm.sh stop DIR}" f pid
  [ -d "$dir" ] || return 0
  for f in slurmd.pid slurmctld.pid munge/munged.pid; do
    [ -f "$dir/$f" ] || continue
    pid="$(cat "$dir/$f")"
    kill "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
