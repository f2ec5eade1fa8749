"""One libvirtd per lab host: its own network, mount and UTS namespace, sockets, state, config.

Exactly as `../shared/HYPERVISOR_FACTS.md` found it works without systemd:
`ip netns exec HOSTNS unshare -m -u --propagation private sh SCRIPT`, and the script

- sets a hostname of its own (migration refuses two daemons with one hostname),
- bind-mounts the lab state folder and the image cache back where they were (so domain XML
  paths mean the same inside and outside), then per-host directories over `/run`, `/var` and
  `/etc/libvirt`, and copies of `/etc/passwd` and `/etc/group` with a `libvirt-qemu` user,
- `exec libvirtd --listen`: the spawned pid *is* the daemon (`ip netns exec`, `unshare` and
  `sh` all exec), and it lives in the host's network namespace, so `lab down` finds it (and
  its QEMUs) like every other process of the lab.

Per host `STATE/libvirt/HOST/` holds `run/`, `var/`, `etc/` (libvirtd.conf: TCP on the host's
underlay address, no auth, a distinct host_uuid; qemu.conf: root, no cgroups, no security
driver, no namespaces, `stdio_handler = "file"` so no virtlogd), `passwd`, `group`,
`start.sh` and `console/` (the guests' serial logs). Connect with `uri(paths, host)`. The QEMU
capabilities cache is shared by all daemons (`capabilities_cache`).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

from hyperwall.lab import nsexec
from hyperwall.lab.errors import LabError
from hyperwall.lab.state import LabPaths
from hyperwall.lab.topology import LabHost

READY_TIMEOUT = 30.0
QEMU_USER = "libvirt-qemu:x:64055:64055:Libvirt Qemu,,,:/var/lib/libvirt:/usr/sbin/nologin\n"
QEMU_GROUP = "libvirt-qemu:x:64055:\n"
KVM_GROUP = "kvm:x:64056:\n"
_TOOLS = ("libvirtd", "unshare", "qemu-system-x86_64")


def missing() -> str | None:
    """Why `--vm libvirt` cannot run here, or None."""
    absent = [t for t in _TOOLS if shutil.which(t) is None]
    if absent:
        return (
            f"--vm libvirt needs libvirt and QEMU: {', '.join(absent)} not found (install"
            " libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86; scripts/bootstrap does)"
        )
    try:
        import libvirt  # noqa: F401
    except ImportError:
        return "--vm libvirt needs libvirt-python in this Python (pip install libvirt-python)"
    return None


def host_dir(paths: LabPaths, host: str) -> Path:
    return paths.dir / "libvirt" / host


def socket_path(paths: LabPaths, host: str) -> Path:
    return host_dir(paths, host) / "run" / "libvirt" / "libvirt-sock"


def uri(paths: LabPaths, host: str) -> str:
    """The connect URI of host `host`'s daemon (works from any namespace: a unix socket)."""
    return f"qemu+unix:///system?socket={socket_path(paths, host)}"


def console_log(paths: LabPaths, host: str, domain: str) -> Path:
    return host_dir(paths, host) / "console" / f"{domain}.log"


def host_uuid(lab: str, host: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hyperwall-lab:{lab}:{host}"))


def libvirtd_conf(listen_addr: str, uuid_: str) -> str:
    return (
        "listen_tls = 0\n"
        "listen_tcp = 1\n"
        f'listen_addr = "{listen_addr}"\n'
        'auth_tcp = "none"\n'
        'auth_unix_rw = "none"\n'
        'auth_unix_ro = "none"\n'
        f'host_uuid = "{uuid_}"\n'
        'log_outputs = "3:file:/var/log/libvirt/libvirtd.log"\n'
    )


QEMU_CONF = (
    'user = "root"\n'
    'group = "root"\n'
    "dynamic_ownership = 0\n"
    "remember_owner = 0\n"
    "cgroup_controllers = [ ]\n"
    'security_driver = "none"\n'
    "namespaces = [ ]\n"
    'stdio_handler = "file"\n'
)


def _keep(path: Path, hd: Path) -> str:
    """Shell lines that make `path` visible at its own place after /run and /var are covered."""
    for top in ("/run", "/var"):
        if path.is_relative_to(top):
            mountpoint = hd / top.lstrip("/") / path.relative_to(top)
            return f"mkdir -p '{mountpoint}'\nmount --bind '{path}' '{mountpoint}'\n"
    return ""


def capabilities_cache(cache: Path) -> Path:
    """Where every lab daemon keeps libvirt's QEMU capabilities (probing them runs QEMU for
    about 10 s under TCG; libvirt checks the cache against the QEMU binary and itself, and
    replaces files by rename, so daemons can share it)."""
    return cache / "libvirt-qemu-capabilities"


def start_script(paths: LabPaths, host: LabHost, cache: Path, hostname: str) -> str:
    hd = host_dir(paths, host.name)
    caps = capabilities_cache(cache)
    return (
        "set -e\n"
        f"hostname '{hostname}'\n"
        f"{_keep(paths.dir, hd)}"
        f"{_keep(cache, hd)}"
        f"mount --bind '{caps}' '{hd}/var/cache/libvirt/qemu/capabilities'\n"
        f"mount --rbind '{hd}/var' /var\n"
        f"mount --bind '{hd}/etc' /etc/libvirt\n"
        f"mount --bind '{hd}/passwd' /etc/passwd\n"
        f"mount --bind '{hd}/group' /etc/group\n"
        # last: every source above lives under the real /run (the lab's state folder)
        f"mount --rbind '{hd}/run' /run\n"
        "exec libvirtd --listen\n"
    )


def prepare(paths: LabPaths, host: LabHost, cache: Path) -> Path:
    """Write host `host`'s directories, config and start script; the script's path."""
    hd = host_dir(paths, host.name)
    for sub in (
        "run/libvirt",
        "run/lock",
        "var/lib/libvirt/qemu",
        "var/cache/libvirt/qemu/capabilities",
        "var/log/libvirt/qemu",
        "var/tmp",
        "etc/qemu",
        "console",
    ):
        (hd / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(hd / "var/tmp", 0o1777)
    capabilities_cache(cache).mkdir(parents=True, exist_ok=True)
    for name, target in (("var/run", "/run"), ("var/lock", "/run/lock")):
        if not (hd / name).is_symlink():
            (hd / name).symlink_to(target)
    (hd / "etc/libvirtd.conf").write_text(
        libvirtd_conf(host.ipv4, host_uuid(paths.name, host.name))
    )
    (hd / "etc/qemu.conf").write_text(QEMU_CONF)
    passwd = Path("/etc/passwd").read_text()
    group = Path("/etc/group").read_text()
    if "\nlibvirt-qemu:" not in f"\n{passwd}":
        passwd += QEMU_USER
    for line in (QEMU_GROUP, KVM_GROUP):
        if f"\n{line.split(':')[0]}:" not in f"\n{group}":
            group += line
    (hd / "passwd").write_text(passwd)
    (hd / "group").write_text(group)
    script = hd / "start.sh"
    hostname = f"{paths.name}-{host.name}"[:63]
    script.write_text(start_script(paths, host, cache, hostname))
    return script


def start(paths: LabPaths, host: LabHost, cache: Path) -> int:
    """Start host `host`'s libvirtd in its namespace; its pid (does not wait)."""
    script = prepare(paths, host, cache)
    argv = ["unshare", "-m", "-u", "--propagation", "private", "sh", str(script)]
    return nsexec.spawn(host.ns, argv, paths.logs / f"libvirtd-{host.name}.log")


def wait_ready(paths: LabPaths, pids: dict[str, int], timeout: float = READY_TIMEOUT) -> None:
    """Until every daemon answers on its socket; LabError naming the ones that do not."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    deadline = time.monotonic() + timeout
    waiting = dict(pids)
    while waiting:
        for host, pid in list(waiting.items()):
            if socket_path(paths, host).exists():
                try:
                    libvirt.open(uri(paths, host)).close()
                except libvirt.libvirtError:
                    pass
                else:
                    del waiting[host]
                    continue
            if not nsexec.alive(pid):
                log = paths.logs / f"libvirtd-{host}.log"
                text = log.read_text(errors="replace").strip()[-800:] if log.exists() else ""
                raise LabError(f"libvirtd of host {host} exited: {text}")
        if waiting and time.monotonic() > deadline:
            raise LabError(f"libvirtd did not start within {timeout:g} s: {', '.join(waiting)}")
        if waiting:
            time.sleep(0.05)
