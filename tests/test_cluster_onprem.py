"""cluster-onprem.yaml run for real (issue 24): the commands of docs/search.md ("Cluster"):
`ray up`, `ray status` and the check search through `ray exec`, `ray down`, then `ray up` and
`ray down` again, on hosts that are namespaces of this machine (tests/onprem_hosts.py: a
launcher, a head and a worker, each with its own processes, /tmp, home and address; sshd on the
head and the worker).

The config is cluster-onprem.yaml with only these changes (``derive``):

- addresses: the head and one worker on the hosts' bridge (Ray caps min/max_workers at the
  number of worker_ips);
- the user: root, the one account the test can log in as; the key keeps its path
  ``~/.ssh/id_rsa``, a fresh key in the launcher's home;
- paths: ``/shared`` becomes ``/mnt/shared`` (a folder under tmp_path that every host mounts
  there) and the git URL this checkout (the hosts clone its committed HEAD);
- the venv: ``--system-site-packages`` over the interpreter running the test, so that no host
  installs torch and the rest again (minutes each); ``pip install -e ~/ec4srec`` then installs
  the clone alone, and the venv gets the ``ray`` command (ray's own entry point) that pip
  would have installed with ray;
- the datasets line resolves no dataset (offline: the smoke search generates its data).
"""
from __future__ import annotations

import copy
import re
import shlex
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from onprem_hosts import SUBNET, Host, keygen, missing, wire

ROOT = Path(__file__).resolve().parents[1]
HEAD, WORKER, SHARED = f"{SUBNET}.10", f"{SUBNET}.11", "/mnt/shared"
RAY_SCRIPT = (r"printf '#!%s\nimport sys\nfrom ray.scripts.scripts import main\n"
              r"sys.exit(main())\n' ~/venv/bin/python > ~/venv/bin/ray && chmod +x ~/venv/bin/ray")
# (text in cluster-onprem.yaml's strings, its replacement): each must occur
SUBSTITUTIONS = [
    ("https://github.com/your-org/ec4srec.git", str(ROOT)),
    ("/shared", SHARED),
    ("python3 -m venv ~/venv", "python3 -m venv --system-site-packages ~/venv"),
    ("pip install -e ~/ec4srec", f"pip install -e ~/ec4srec && {RAY_SCRIPT}"),
    ("('beauty', 'sports', 'clothing', 'ml-1m')", "()"),
]
# a Ray process: a raylet, GCS, dashboard, monitor, log monitor, agent or worker
RAY_PROCESS = re.compile(r"raylet|gcs_server|ray::|/ray/(dashboard|autoscaler|_private)|"
                         r"default_worker|log_monitor|ray start")


def derive(raw: dict, head_ip: str = HEAD, worker_ip: str = WORKER) -> tuple[dict, dict]:
    """The test's config from cluster-onprem.yaml's ``raw`` (see the module's docstring), and
    how often each substitution applied."""
    config = copy.deepcopy(raw)
    config["provider"].update(head_ip=head_ip, worker_ips=[worker_ip])
    config["auth"]["ssh_user"] = "root"
    counts = {old: 0 for old, _ in SUBSTITUTIONS}

    def substitute(value):
        if isinstance(value, dict):
            return {k: substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v) for v in value]
        if isinstance(value, str):
            for old, new in SUBSTITUTIONS:
                counts[old] += value.count(old)
                value = value.replace(old, new)
        return value

    return substitute(config), counts


def documented_commands() -> list[str]:
    """The on-prem block of docs/search.md, one command a line (continuations joined)."""
    text = (ROOT / "docs/search.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S)
                 if "ray up cluster-onprem.yaml" in b)
    return [line.split("  #")[0].strip() for line in block.replace("\\\n", " ").splitlines()]


def test_derived_config_changes_only_addresses_user_paths_and_the_documented_lines():
    """The slow test's config is a valid cluster config that differs from cluster-onprem.yaml
    only where the module's docstring says; the command it runs is in docs/search.md."""
    from ray.autoscaler._private.util import prepare_config, validate_config
    raw = yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text())
    config, counts = derive(raw)
    # Every substitution the docstring names still finds its text in cluster-onprem.yaml.
    assert all(counts.values()), counts
    validate_config(prepare_config(copy.deepcopy(config)))
    changed = {k for k in raw if config[k] != raw[k]}
    for part in ("provider", "auth"):
        changed |= {f"{part}.{k}" for k in raw[part] if config[part][k] != raw[part][k]}
    # Only the addresses, the user and the setup commands differ from the file.
    assert changed == {"provider", "provider.head_ip", "provider.worker_ips", "auth",
                       "auth.ssh_user", "setup_commands"} and config.keys() == raw.keys(), changed
    # The documented block has the search command the test runs, through ray exec.
    assert any(c.startswith('ray exec cluster-onprem.yaml "cd ec4srec && python tune/search.py')
               for c in documented_commands())


def active_nodes(status: str) -> int:
    """Nodes in the "Active:" part of `ray status` (lines like `` 1 local.cluster.node``)."""
    match = re.search(r"Active:\n(.*?)\n(Idle|Pending):", status, flags=re.S)
    counts = re.findall(r"^\s*(\d+) ", match.group(1), flags=re.M) if match else []
    return sum(map(int, counts))


@pytest.mark.slow
def test_onprem_cluster_runs_the_documented_search_on_both_hosts(tmp_path):
    """`ray up` starts the head and, through its autoscaler, the worker; the documented search
    (paths changed) exits 0 with trials on both; `ray down` leaves no Ray process on the head;
    a second `ray up` sets the worker up again (its setup commands run)."""
    reason = missing()
    if reason:
        pytest.skip(reason)
    shared = tmp_path / "shared"
    shared.mkdir()
    hosts, outputs, times = [], [], {}
    try:
        launcher = Host("launcher", f"{SUBNET}.1", tmp_path, shared)
        hosts.append(launcher)
        head = Host("head", HEAD, tmp_path, shared)
        hosts.append(head)
        worker = Host("worker", WORKER, tmp_path, shared)
        hosts.append(worker)
        wire(launcher, [head, worker])
        public_key = keygen(launcher.dir / "home/.ssh/id_rsa")
        head.start_sshd(public_key)
        worker.start_sshd(public_key)
        config, _ = derive(yaml.safe_load((ROOT / "cluster-onprem.yaml").read_text()))
        (launcher.dir / "home/cluster-onprem.yaml").write_text(yaml.safe_dump(config))

        def ray(argv: list[str], timeout: float, label: str | None = None):
            start = time.monotonic()
            result = launcher.run(["ray", *argv], timeout=timeout, check=False)
            outputs.append((" ".join(argv)[:80], result))
            log = tmp_path / f"ray-{len(outputs)}-{argv[0]}.log"
            log.write_text(result.stdout + result.stderr)
            if label:
                times[label] = time.monotonic() - start
            return result

        def up_and_join(label: str) -> None:
            up = ray(["up", "-y", "cluster-onprem.yaml"], timeout=300, label=label)
            # `ray up` of the derived config starts the head.
            assert up.returncode == 0, up.stdout[-3000:]
            start = time.monotonic()
            while time.monotonic() - start < 240:
                status = ray(["exec", "cluster-onprem.yaml", "ray status"], timeout=60)
                if active_nodes(status.stdout) >= 2:
                    break
                time.sleep(5)
            times[f"{label}: worker joined"] = time.monotonic() - start
            # The head's autoscaler set up and started the worker: two nodes are active.
            assert active_nodes(status.stdout) == 2, status.stdout[-3000:]

        def down(label: str) -> None:
            result = ray(["down", "-y", "cluster-onprem.yaml"], timeout=120, label=label)
            # `ray down` succeeds.
            assert result.returncode == 0, result.stdout[-3000:]
            left = [p for p in head.processes() if RAY_PROCESS.search(p)]
            # No Ray process is left on the head.
            assert not left, left

        up_and_join("ray up")
        documented = next(c for c in documented_commands() if "tune/search.py" in c)
        remote = shlex.split(documented)[3].replace("/shared", SHARED)
        search = ray(["exec", "cluster-onprem.yaml", remote], timeout=480, label="search")
        # The documented search, run through `ray exec` on the head, finishes.
        assert search.returncode == 0, search.stdout[-5000:]
        trials = pd.read_csv(shared / "ray_results/ec4srec-synthetic/trials.csv")
        ips = {ip for cell in trials["node_ips"].astype(str) for ip in cell.split(";")}
        # Every trial ended well (ran its epochs or was stopped by ASHA), on the head or the
        # worker, and both ran trials.
        assert trials["state"].isin(["completed", "pruned"]).all() and ips == {HEAD, WORKER}, \
            trials[["trial_id", "state", "node_ips"]]
        down("ray down")
        lingering = [p.split()[1] for p in worker.processes() if RAY_PROCESS.search(p)]

        # Again: the worker is set up anew (its `git pull` runs), not only restarted from the
        # head's stale record of it (Ray issues 12451, 22773).
        fetch_head = worker.dir / "home/ec4srec/.git/FETCH_HEAD"
        pulled = fetch_head.stat().st_mtime_ns
        up_and_join("ray up again")
        # The second `ray up` ran the worker's setup commands.
        assert fetch_head.stat().st_mtime_ns > pulled
        down("ray down again")
        print(f"on-prem cluster: {len(trials)} trials, on {sorted(ips)}; seconds: "
              f"{({k: round(v) for k, v in times.items()})}; left on the worker by ray down: "
              f"{lingering}")
    except BaseException:
        report(hosts, outputs)
        raise
    finally:
        for host in hosts:
            host.stop()


def report(hosts: list[Host], outputs: list) -> None:
    """Print what explains a failure: the last commands' output, the head's autoscaler log and
    the sshd logs."""
    for title, result in outputs[-3:]:
        print(f"--- ray {title}: exit {result.returncode}\n{result.stdout[-4000:]}"
              f"\n{result.stderr[-2000:]}", file=sys.stderr)
    for host in hosts[1:]:
        logs = ("/tmp/ray/session_latest/logs/monitor.* /mnt/host/sshd.log" if host.name == "head"
                else "/mnt/host/sshd.log /tmp/ray/session_latest/logs/raylet.err")
        try:
            tail = host.run(["sh", "-c", f"tail -n 40 {logs}"], timeout=30, check=False).stdout
        except Exception as exc:   # the host is gone: say so, keep the test's own error
            tail = repr(exc)
        print(f"--- {host.name}: {logs}\n{tail}", file=sys.stderr)
