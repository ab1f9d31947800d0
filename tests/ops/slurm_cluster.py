"""A real one-node Slurm cluster for tests: install (Debian slurm-wlm + munge), start, stop.

``ensure_installed()`` runs ``apt-get install -y slurm-wlm munge`` when the daemons are missing
(root and apt-get needed; returns a reason string when impossible).  ``SlurmCluster(work_dir)``
writes a slurm.conf naming this host at 127.0.0.1 (linuxproc proctrack, no task plugin, cons_tres,
no accounting) with its own free ports and state directories, starts munged (unless one already
answers), slurmctld and slurmd, and waits until the node is idle.  ``stop()`` ends only the
daemons it started, by pid.  Client commands must get ``cluster.env`` (it sets SLURM_CONF).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ["slurm-wlm", "munge"]
BINARIES = ["slurmctld", "slurmd", "sbatch", "squeue", "sinfo", "scontrol", "srun", "munged", "munge", "unmunge"]


def apt_install(packages: list[str], binaries: list[str], timeout: float = 900) -> str | None:
    """apt-get install ``packages`` unless every one of ``binaries`` is already on PATH (or in
    /usr/sbin); None when ready, else the reason it cannot be done here."""
    def missing():
        return [b for b in binaries if shutil.which(b) is None and not Path("/usr/sbin", b).exists()]
    if not missing():
        return None
    if os.geteuid() != 0:
        return f"{', '.join(missing())} not installed and this user is not root (cannot apt-get install)"
    if shutil.which("apt-get") is None:
        return f"{', '.join(missing())} not installed and there is no apt-get"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"`{' '.join(cmd)}` did not finish in {timeout:.0f}s"
        if proc.returncode != 0:
            return f"`{' '.join(cmd)}` failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}"
    return f"after apt-get install, still missing: {', '.join(missing())}" if missing() else None


def ensure_installed(timeout: float = 900) -> str | None:
    """Install Slurm and munge if needed; None when ready, else the reason it cannot be."""
    return apt_install(PACKAGES, BINARIES, timeout)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sbin(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


class SlurmCluster:
    """slurmctld + slurmd (+ munged if none is running) for this host, bound to 127.0.0.1."""

    def __init__(self, work_dir: str | os.PathLike, cpus: int | None = None):
        self.dir = Path(work_dir)
        self.host = socket.gethostname().split(".")[0]
        self.cpus = cpus or os.cpu_count() or 1
        self.conf = self.dir / "slurm.conf"
        self.env = dict(os.environ, SLURM_CONF=str(self.conf))
        self._procs: list[tuple[str, int]] = []  # (name, pid) of daemons we started

    def _write_conf(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        d = self.dir
        self.conf.write_text("\n".join([
            "ClusterName=mrtest",
            f"SlurmctldHost={self.host}(127.0.0.1)",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"StateSaveLocation={d}/state",
            f"SlurmdSpoolDir={d}/spool",
            f"SlurmctldPidFile={d}/slurmctld.pid",
            f"SlurmdPidFile={d}/slurmd.pid",
            f"SlurmctldLogFile={d}/log/slurmctld.log",
            f"SlurmdLogFile={d}/log/slurmd.log",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "AccountingStorageType=accounting_storage/none",
            "JobAcctGatherType=jobacct_gather/none",
            "JobCompType=jobcomp/none",
            "MpiDefault=none",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SlurmctldTimeout=30",
            "SlurmdTimeout=30",
            "InactiveLimit=0",
            "KillWait=5",
            "MinJobAge=300",
            f"NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO",
            "",
        ]))

    def _munge_ok(self) -> bool:
        try:
            cred = subprocess.run(["munge", "-n"], capture_output=True, timeout=10)
            if cred.returncode != 0:
                return False
            return subprocess.run(["unmunge"], input=cred.stdout, capture_output=True, timeout=10).returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            return False

    def _start_munge(self) -> None:
        if self._munge_ok():
            return
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        if not Path("/etc/munge/munge.key").exists():
            subprocess.run(["runuser", "-u", "munge", "--", "mungekey", "--create"], check=True)
        subprocess.run(["runuser", "-u", "munge", "--", _sbin("munged")], check=True, timeout=30)
        pid_file = Path("/run/munge/munged.pid")
        deadline = time.time() + 20
        while not self._munge_ok():
            if time.time() > deadline:
                raise RuntimeError("munged did not start (munge -n | unmunge fails)")
            time.sleep(0.2)
        if pid_file.exists():
            self._procs.append(("munged", int(pid_file.read_text().split()[0])))

    def _start_daemon(self, name: str) -> None:
        subprocess.run([_sbin(name), "-f", str(self.conf)], check=True, env=self.env, timeout=60)
        pid_file = self.dir / f"{name}.pid"
        deadline = time.time() + 30
        while not pid_file.exists() or not pid_file.read_text().strip():
            if time.time() > deadline:
                raise RuntimeError(f"{name} did not start: {self.log(name)[-2000:]}")
            time.sleep(0.1)
        self._procs.append((name, int(pid_file.read_text().split()[0])))

    def log(self, name: str) -> str:
        path = self.dir / "log" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self, timeout: float = 60) -> "SlurmCluster":
        self._write_conf()
        self._start_munge()
        self._start_daemon("slurmctld")
        self._start_daemon("slurmd")
        deadline = time.time() + timeout
        state = ""
        while time.time() < deadline:
            proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%T"], capture_output=True, text=True, env=self.env)
            state = proc.stdout.strip()
            if state.startswith("idle"):
                return self
            time.sleep(0.5)
        raise RuntimeError(f"the Slurm node never became idle (state {state!r}); slurmctld log:\n"
                           f"{self.log('slurmctld')[-2000:]}\nslurmd log:\n{self.log('slurmd')[-2000:]}")

    def run(self, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), capture_output=True, text=True, env=kw.pop("env", self.env), **kw)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args)}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def job_state(self, job_id: str) -> str:
        """State of a job (or of each array element, space separated) from scontrol."""
        proc = self.run("scontrol", "-o", "show", "job", job_id, check=False)
        states = [f.split("=", 1)[1] for line in proc.stdout.splitlines() for f in line.split()
                  if f.startswith("JobState=")]
        return " ".join(states) if states else "UNKNOWN"

    def wait(self, job_id: str, timeout: float) -> str:
        """Wait until every element of the job has finished; return the final state(s)."""
        deadline = time.time() + timeout
        unfinished = {"PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED"}
        while time.time() < deadline:
            state = self.job_state(job_id)
            if state != "UNKNOWN" and not (set(state.split()) & unfinished):
                return state
            time.sleep(1.0)
        self.run("scancel", job_id, check=False)
        raise TimeoutError(f"job {job_id} still {self.job_state(job_id)} after {timeout:.0f}s")

    def stop(self) -> None:
        """Stop the daemons this object started (slurmd, slurmctld, then munged), by pid."""
        for name, pid in reversed(self._procs):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            deadline = time.time() + 15
            while time.time() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.1)
            else:
                os.kill(pid, signal.SIGKILL)
        self._procs.clear()
