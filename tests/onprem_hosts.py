"""Machines for a real `ray up` on one computer: each host is a process tree in its own PID,
mount, network and UTS namespaces, so Ray's `ray stop` on it sees only its own processes.

Every host sees the computer's file system, except (in its own mount namespace):

- ``/mnt`` is a fresh tmpfs holding ``/mnt/home`` (the host's home, ``<dir>/home``),
  ``/mnt/shared`` (the one folder all hosts share, like an NFS mount) and ``/mnt/host``
  (``<dir>``: the host's sshd files and logs);
- ``/etc/passwd`` gives root the home ``/mnt/home`` (sshd and ssh read the home from it), and
  ``/etc/resolv.conf`` names no reachable DNS server, so that a look-up fails at once;
- ``/tmp`` is ``<dir>/tmp`` (Ray's sessions, the launcher's cluster state, SSH control sockets);
  ``/run`` and ``/dev/shm`` are empty tmpfs.

A host's home starts as a machine provisioned like this one: a ``.bashrc`` that puts this
interpreter first on the PATH (as ``python3``, with its packages) and exports this process's
``PIP_*`` settings, and a copy of the user's pip config (an offline index, say).

Hosts talk over a bridge in the first host (the launcher, ``SUBNET.1``) on ``SUBNET.0/24``; the
others route through it by default, as a LAN's machines would, and it reaches nothing beyond.
Killing a host's init (PID 1 of its namespace) ends every process in it; an init also dies with
the test process.
"""
from __future__ import annotations

import ctypes
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

SUBNET = "10.200.0"
SBIN = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
# a host's PATH: this interpreter's folder (with python3 and ray), then the system's
PATH = os.pathsep.join([str(Path(sys.executable).parent), "/usr/local/sbin", "/usr/local/bin",
                        "/usr/sbin", "/usr/bin", "/sbin", "/bin"])
TOOLS = ("sshd", "ssh", "ssh-keygen", "rsync", "git", "unshare", "nsenter", "ip", "ps", "sysctl")
# PID 1 of a host: reaps every orphan, so that a stopped process does not linger as a zombie.
REAPER = ("import os, time\nwhile True:\n    try:\n        os.wait()\n"
          "    except ChildProcessError:\n        time.sleep(0.2)\n")
SETUP = """set -e
mount -t tmpfs -o mode=755 cluster /mnt
mkdir /mnt/home /mnt/shared /mnt/host
mount --bind "$DIR" /mnt/host
mount --bind "$DIR/home" /mnt/home
mount --bind "$SHARED" /mnt/shared
mount --bind "$DIR/passwd" /etc/passwd
mount -t tmpfs -o mode=755 run /run
mkdir -m 755 /run/sshd
resolv=$(readlink -m /etc/resolv.conf)
mkdir -p "$(dirname "$resolv")" && touch "$resolv"
mount --bind "$DIR/resolv.conf" "$resolv"
mount -t tmpfs shm /dev/shm
mount --bind "$DIR/tmp" /tmp
ip link set lo up
touch /run/ready
exec "$PYTHON" -c "$REAPER"
"""


def missing() -> str | None:
    """Why hosts cannot be made here (a tool missing, no namespaces, a venv), or None."""
    if not sys.platform.startswith("linux"):
        return "Linux namespaces are needed for the on-prem hosts"
    for tool in TOOLS:
        if not shutil.which(tool, path=SBIN):
            package = {"sshd": "openssh-server", "ssh": "openssh-client", "ps": "procps",
                       "ssh-keygen": "openssh-client", "sysctl": "procps"}.get(tool, tool)
            return f"no {tool} on PATH: install {package} to run the on-prem ray up test"
    for command in ("python3", "ray"):
        if not (Path(sys.executable).parent / command).exists():
            return f"no {command} command next to {sys.executable}"
    if sys.prefix != sys.base_prefix:
        return ("the test runs in a venv: the hosts' venvs (--system-site-packages) would not "
                "see its packages; run it with a base interpreter")
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "--net", "--mount", "--uts", "--",
         "ip", "link", "add", "probe0", "type", "veth", "peer", "name", "probe1"],
        capture_output=True, text=True, timeout=30)
    if probe.returncode:
        return f"cannot create PID/mount/network namespaces and veth links: {probe.stderr.strip()}"
    return None


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it when the test process dies (PR_SET_PDEATHSIG)."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


class Host:
    """One host: ``ip`` on the bridge, files under ``dir`` (home/, tmp/, passwd, sshd files)."""

    def __init__(self, name: str, ip: str, base: Path, shared: Path):
        self.name, self.ip, self.dir = name, ip, base / name
        for sub in ("home/.ssh", "tmp"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "home/.ssh").chmod(0o700)
        # the machine as provisioned (see the module's docstring)
        pip_env = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in os.environ.items()
                          if k.startswith("PIP_"))
        (self.dir / "home/.bashrc").write_text(
            f"export PATH={Path(sys.executable).parent}:$PATH\n{pip_env}")
        for config in (".config/pip/pip.conf", ".pip/pip.conf"):
            if (Path.home() / config).is_file():
                (self.dir / "home" / config).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path.home() / config, self.dir / "home" / config)
        passwd = [line if not line.startswith("root:") else _with_home(line, "/mnt/home")
                  for line in Path("/etc/passwd").read_text().splitlines()]
        (self.dir / "passwd").write_text("\n".join(passwd) + "\n")
        (self.dir / "resolv.conf").write_text("nameserver 127.0.0.1\noptions attempts:1\n")
        env = {"PATH": SBIN, "DIR": str(self.dir), "SHARED": str(shared),
               "PYTHON": sys.executable, "REAPER": REAPER}
        # --kill-child: the namespace's init dies with unshare, which dies with this process.
        self.unshare = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--net", "--mount",
             "--uts", "--", "sh", "-c", SETUP],
            env=env, stdout=subprocess.DEVNULL, stderr=open(self.dir / "init.err", "w"),
            preexec_fn=_die_with_parent)
        try:
            self.pid = self._wait_for_init()
        except BaseException:
            self.unshare.kill()
            self.unshare.wait(timeout=30)
            raise

    def _wait_for_init(self, timeout: float = 30) -> int:
        children = Path(f"/proc/{self.unshare.pid}/task/{self.unshare.pid}/children")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.unshare.poll() is not None:
                break
            pids = children.read_text().split() if children.exists() else []
            if pids and Path(f"/proc/{pids[0]}/root/run/ready").exists():
                return int(pids[0])
            time.sleep(0.1)
        raise RuntimeError(f"host {self.name} did not start: {(self.dir / 'init.err').read_text()}")

    def run(self, argv: list[str], timeout: float, check: bool = True, **env: str):
        """Run ``argv`` as root in the host, in its home, with a login-like environment."""
        base = {"HOME": "/mnt/home", "USER": "root", "LANG": "C.UTF-8", "PATH": PATH}
        variables = [f"{k}={v}" for k, v in {**base, **env}.items()]
        command = ["nsenter", "-t", str(self.pid), "-a", "--",
                   "env", "-i", "-C", "/mnt/home", *variables, *argv]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        if check and result.returncode:
            raise RuntimeError(f"{self.name}: {argv} exited {result.returncode}:\n"
                               f"{result.stdout}\n{result.stderr}")
        return result

    def processes(self) -> list[str]:
        """``STAT ARGS`` of every live (not zombie) process in the host but its init."""
        out = self.run(["ps", "-eo", "pid=,stat=,args="], timeout=30).stdout
        return [line.split(None, 1)[1] for line in out.splitlines()
                if line.split()[0] != "1" and not line.split()[1].startswith("Z")]

    def start_sshd(self, authorized_key: str) -> None:
        """sshd on ``ip``:22, root logs in with ``authorized_key`` only; log in ``dir/sshd.log``."""
        ssh = self.dir / "home/.ssh"
        (ssh / "authorized_keys").write_text(authorized_key)
        (ssh / "authorized_keys").chmod(0o600)
        keygen(self.dir / "host_key", "ed25519")
        (self.dir / "sshd_config").write_text(
            f"ListenAddress {self.ip}\nHostKey /mnt/host/host_key\nPidFile none\nUsePAM no\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nMaxSessions 100\nMaxStartups 100\n"
            "Subsystem sftp internal-sftp\n")
        sshd = shutil.which("sshd", path=SBIN)
        self.run([sshd, "-f", "/mnt/host/sshd_config", "-E", "/mnt/host/sshd.log"], timeout=30)

    def stop(self) -> None:
        """Kill the namespace's init, and with it every process of the host."""
        try:
            os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.unshare.poll() is None:
            self.unshare.kill()
        self.unshare.wait(timeout=30)


def _with_home(passwd_line: str, home: str) -> str:
    fields = passwd_line.split(":")
    fields[5] = home
    return ":".join(fields)


def keygen(path: Path, kind: str = "rsa") -> str:
    """A passphrase-less key pair at ``path``; returns the public key line."""
    subprocess.run(["ssh-keygen", "-q", "-t", kind, "-N", "", "-C", path.name, "-f", str(path)],
                   check=True, timeout=60)
    return Path(f"{path}.pub").read_text()


def wire(switch: Host, hosts: list[Host]) -> None:
    """Bridge ``switch`` (its address ``switch.ip``) to each host over a veth pair; every host
    gets ``host.ip`` on eth0 and a default route through the switch, which answers "network
    unreachable" for any address beyond the bridge: a LAN without internet access, where a
    DNS look-up or a download fails at once instead of waiting for its time-out."""
    def ip(host: Host, *args: str) -> None:
        subprocess.run(["nsenter", "-t", str(host.pid), "-n", "ip", *args], check=True,
                       timeout=30, env={"PATH": SBIN})

    ip(switch, "link", "add", "br0", "type", "bridge")
    ip(switch, "addr", "add", f"{switch.ip}/24", "dev", "br0")
    ip(switch, "link", "set", "br0", "up")
    ip(switch, "route", "add", "unreachable", "default")
    subprocess.run(["nsenter", "-t", str(switch.pid), "-n", "sysctl", "-qw",
                    "net.ipv4.ip_forward=1"], check=True, timeout=30, env={"PATH": SBIN})
    for host in hosts:
        port = f"v-{host.name}"[:15]
        ip(switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns",
           str(host.pid))
        ip(switch, "link", "set", port, "master", "br0", "up")
        ip(host, "addr", "add", f"{host.ip}/24", "dev", "eth0")
        ip(host, "link", "set", "eth0", "up")
        ip(host, "route", "add", "default", "via", switch.ip)
