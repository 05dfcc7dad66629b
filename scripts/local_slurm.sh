#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the cluster tests (tests/test_cluster.py) and
# for trying `--executor slurm` without a cluster: munged, MariaDB + slurmdbd (accounting, so that
# `sacct`, which submitit asks for job states, answers), slurmctld and slurmd on localhost, all
# run as root. Installs Debian's packages when they are missing. Idempotent: a second call finds
# the node up and returns at once. Needs root (Debian/Ubuntu, no systemd needed).
#
#   sudo bash scripts/local_slurm.sh            # start (or find running)
#   sudo bash scripts/local_slurm.sh --stop     # stop the daemons it started
set -euo pipefail

CLUSTER=segda
PARTITION=debug
CONF=/etc/slurm/slurm.conf
DBD_CONF=/etc/slurm/slurmdbd.conf
LOGS=/var/log/slurm
NODE=$(hostname -s)

say() { echo "local_slurm: $*"; }
fail() { echo "local_slurm: error: $*" >&2; exit 1; }

stop() {
    for daemon in slurmd slurmctld slurmdbd; do
        if [ -f "/run/$daemon.pid" ]; then kill "$(cat "/run/$daemon.pid")" 2>/dev/null || true; fi
    done
    say "stopped slurmd, slurmctld and slurmdbd (munged and MariaDB left running)"
}

node_up() {
    sinfo -h -N -n "$NODE" -o '%t' 2>/dev/null | grep -Eq '^(idle|mix|alloc)'
}

wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    for _ in $(seq 1 "$((limit * 2))"); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.5
    done
    fail "$what did not come up within $limit s (logs in $LOGS)"
}

if [ "${1:-}" = "--stop" ]; then stop; exit 0; fi
[ "$(id -u)" -eq 0 ] || fail "run as root (it installs packages and starts daemons): sudo bash $0"

if command -v sinfo >/dev/null && node_up && sacct -n -X -S now >/dev/null 2>&1; then
    say "node $NODE is up in partition $PARTITION (already running)"
    exit 0
fi

if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null || ! command -v munged >/dev/null \
        || ! command -v mariadbd >/dev/null; then
    command -v apt-get >/dev/null || fail "slurm-wlm, slurmdbd, munge and mariadb-server are missing and there is no apt-get"
    say "installing slurm-wlm slurmdbd munge mariadb-server"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm slurmdbd munge mariadb-server >/dev/null
fi

mkdir -p "$LOGS" /var/spool/slurmctld /var/spool/slurmd /run/munge /run/mysqld
chown munge:munge /run/munge
chown mysql:mysql /run/mysqld 2>/dev/null || true

# munge: the key the package made (or a new one), then the daemon.
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
    chown munge:munge /etc/munge/munge.key
    chmod 400 /etc/munge/munge.key
fi
if ! munge -n >/dev/null 2>&1; then
    su -s /bin/sh munge -c "munged --force" || munged --force
    wait_for 10 munged munge -n
fi

# MariaDB, and the database user slurmdbd logs in as.
if ! mysqladmin ping >/dev/null 2>&1; then
    (mysqld_safe --user=mysql >"$LOGS/mariadb.out" 2>&1 &)
    wait_for 30 MariaDB mysqladmin ping
fi
mysql -e "CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
          GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost'; FLUSH PRIVILEGES;"

cat >"$DBD_CONF" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
LogFile=$LOGS/slurmdbd.log
PidFile=/run/slurmdbd.pid
EOF
chmod 600 "$DBD_CONF"

# One node with this machine's CPUs and a modest memory figure (jobs ask for none).
CPUS=$(nproc)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))
cat >"$CONF" <<EOF
ClusterName=$CLUSTER
SlurmctldHost=$NODE
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOGS/slurmctld.log
SlurmdLogFile=$LOGS/slurmd.log
# No cgroups: processes are tracked through their parents, which works in containers.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
KillWait=10
# Accounting through slurmdbd: sacct answers with every job's state.
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
NodeName=$NODE CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=$PARTITION Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF

if ! sacctmgr -n list cluster >/dev/null 2>&1; then
    slurmdbd
    wait_for 30 slurmdbd sacctmgr -n list cluster
fi
if ! sacctmgr -n -P list cluster format=Cluster | grep -qx "$CLUSTER"; then
    sacctmgr -i add cluster "$CLUSTER" >/dev/null
fi

if ! scontrol ping 2>/dev/null | grep -q UP; then
    slurmctld
    wait_for 30 slurmctld bash -c "scontrol ping | grep -q UP"
fi
if ! node_up; then
    if [ -f /run/slurmd.pid ] && kill -0 "$(cat /run/slurmd.pid)" 2>/dev/null; then :; else slurmd; fi
    wait_for 60 "node $NODE" node_up
fi
wait_for 30 "accounting (sacct)" sacct -n -X -S now
say "node $NODE is up in partition $PARTITION ($CPUS CPUs); logs in $LOGS"
