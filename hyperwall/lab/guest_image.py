"""The lab guest's kernel and initramfs, built from Debian packages and cached.

`ensure_image()` returns a `GuestImage` (vmlinuz + initrd under `/var/cache/hyperwall/guest/
KEY/`), building it first if the cache has no image for the current inputs. Inputs, all local
except the kernel package:

- the kernel: the package `linux-image-cloud-amd64` depends on (`linux-image-6.1.*-cloud-
  amd64`), fetched with `apt-get download` and unpacked with `dpkg-deb -x` into
  `/var/cache/hyperwall/kernel/PKG_VERSION/` (never installed on the host);
- busybox from busybox-static (`/bin/busybox`) with its applet links;
- the kernel modules the guest needs (`GUEST_MODULES` and their `depends=`, insmod order);
- the host's `nft` with its shared libraries (`ldd`): the guest installs the namespace VMs'
  redirect rule (`iproute.redirect_ruleset`), so every TCP/UDP port answers;
- `guest/hwguest.c` (compiled `gcc -static`) and `guest/init`.

KEY hashes the kernel package's version, the contents of every copied file, the C source,
the gcc version and `FORMAT`: a rebuild happens only when one of them changes. A build runs
under a lock file and is renamed into place, so concurrent `lab up`s share one build and
never see half an image. Counterpart: `lab.guests` (boots guests from it).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hyperwall.lab.errors import LabError
from hyperwall.lab.iproute import redirect_ruleset

DEFAULT_CACHE = Path("/var/cache/hyperwall")
KERNEL_META = "linux-image-cloud-amd64"
BUSYBOX = Path("/bin/busybox")
NFT = Path("/usr/sbin/nft")
ASSETS = Path(__file__).parent / "guest"
FORMAT = 1  # bump when the image layout changes without an input changing
# What the guest loads (dependencies come first, from the modules' own `depends=`):
GUEST_MODULES = (
    "virtio_pci",
    "virtio_net",
    "virtio_console",
    "nft_chain_nat",
    "nft_redir",
)
_DIRS: tuple[str, ...] = ("bin", "sbin", "usr/bin", "usr/sbin", "etc/hw", "lib/modules")
_DIRS += ("proc", "sys", "dev", "tmp", "run", "root")
_TOOLS = ("apt-cache", "apt-get", "dpkg-deb", "gcc", "cpio", "gzip", "ldd")


class GuestImageError(LabError):
    """The guest image cannot be built (a tool or package is missing); the message says why."""


@dataclass(frozen=True, slots=True)
class GuestImage:
    kernel: Path
    initrd: Path
    key: str
    kernel_package: str  # name=version

    @property
    def dir(self) -> Path:
        return self.kernel.parent


def missing_tools() -> list[str]:
    return [t for t in _TOOLS if shutil.which(t) is None] + [
        str(p) for p in (BUSYBOX, NFT) if not p.exists()
    ]


def _run(argv: list[str], cwd: Path | None = None) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        raise GuestImageError(f"{' '.join(argv)} failed: {(proc.stderr or proc.stdout).strip()}")
    return proc.stdout


def kernel_package() -> tuple[str, str]:
    """(name, version) of the kernel package `linux-image-cloud-amd64` depends on now.

    One `apt-cache show` (about 1 s): the meta package pins its kernel with `(= VERSION)`.
    """
    show = _run(["apt-cache", "show", "--no-all-versions", KERNEL_META])
    found = re.search(r"^Depends:.*?(linux-image-\S+-cloud-amd64) \(= (\S+)\)", show, re.M)
    if found is None:
        raise GuestImageError(
            f"no {KERNEL_META} with a pinned kernel in the apt lists (run `apt-get update`)"
        )
    return found.group(1), found.group(2)


def _digest(paths: Iterable[Path]) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}


def shared_libraries(binary: Path) -> list[Path]:
    """The files `ldd` resolves for `binary` (the dynamic loader included)."""
    libs = []
    for line in _run(["ldd", str(binary)]).splitlines():
        m = re.search(r"(/\S+)\s+\(0x", line)
        if m:
            libs.append(Path(m.group(1)))
    return libs


def image_key(kernel: tuple[str, str]) -> str:
    files = [BUSYBOX, NFT, *shared_libraries(NFT), ASSETS / "init", ASSETS / "hwguest.c"]
    gcc = _run(["gcc", "--version"]).splitlines()[0]
    inputs = {
        "format": FORMAT,
        "kernel": f"{kernel[0]}={kernel[1]}",
        "files": _digest(files),
        "gcc": gcc,
        "modules": GUEST_MODULES,
        "ruleset": redirect_ruleset(),
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _image_at(folder: Path, key: str, package: str) -> GuestImage:
    return GuestImage(folder / "vmlinuz", folder / "initrd.img", key, package)


def ensure_image(cache: Path = DEFAULT_CACHE) -> GuestImage:
    """The cached image for the current inputs, built first if there is none."""
    missing = missing_tools()
    if missing:
        raise GuestImageError(f"cannot build the guest image: missing {', '.join(missing)}")
    kernel = kernel_package()
    key = image_key(kernel)
    package = f"{kernel[0]}={kernel[1]}"
    folder = cache / "guest" / key
    if (folder / "manifest.json").exists():
        return _image_at(folder, key, package)
    with _locked(cache / "guest" / ".lock"):
        if not (folder / "manifest.json").exists():
            tree = _kernel_tree(cache, *kernel)
            _build(tree, folder, key, package)
    return _image_at(folder, key, package)


def _kernel_tree(cache: Path, name: str, version: str) -> Path:
    """The unpacked kernel package (downloaded and unpacked once per version)."""
    tree = cache / "kernel" / f"{name}_{version}"
    if (tree / ".complete").exists():
        return tree
    tmp = Path(tempfile.mkdtemp(prefix=".kernel-", dir=cache))
    try:
        os.chmod(tmp, 0o755)  # apt-get download drops privileges to _apt where it can
        _run(["apt-get", "download", "-q", f"{name}={version}"], cwd=tmp)
        debs = list(tmp.glob("*.deb"))
        if len(debs) != 1:
            raise GuestImageError(f"apt-get download {name}={version} gave {debs}")
        unpacked = tmp / "tree"
        _run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)])
        (unpacked / ".complete").write_text(f"{name}={version}\n")
        shutil.rmtree(tree, ignore_errors=True)
        tree.parent.mkdir(parents=True, exist_ok=True)
        unpacked.rename(tree)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return tree


def module_depends(ko: Path) -> list[str]:
    """The `depends=` of a kernel module (from its .modinfo strings)."""
    data = ko.read_bytes()
    m = re.search(rb"(?:^|\x00)depends=([^\x00]*)\x00", data)
    if m is None or not m.group(1):
        return []
    return m.group(1).decode().split(",")


def module_order(modules_dir: Path, wanted: Iterable[str]) -> list[tuple[str, Path]]:
    """`wanted` with every dependency, dependencies first: (name, .ko path)."""
    files = {p.name.removesuffix(".ko").replace("-", "_"): p for p in modules_dir.rglob("*.ko")}
    order: list[tuple[str, Path]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        name = name.replace("-", "_")
        if name in seen:
            return
        seen.add(name)
        if name not in files:
            raise GuestImageError(f"kernel module {name} not in {modules_dir}")
        for dep in module_depends(files[name]):
            visit(dep)
        order.append((name, files[name]))

    for name in wanted:
        visit(name)
    return order


def _copy(src: Path, root: Path, dest: str | None = None) -> None:
    target = root / (dest or str(src)).lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src.resolve(), target)


def _build(tree: Path, folder: Path, key: str, package: str) -> None:
    versions = sorted((tree / "lib" / "modules").iterdir())
    vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(versions) != 1 or len(vmlinuz) != 1:
        raise GuestImageError(f"unexpected kernel package layout in {tree}")
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=folder.parent))
    try:
        root = work / "root"
        for d in _DIRS:
            (root / d).mkdir(parents=True, exist_ok=True)
        _copy(BUSYBOX, root, "/bin/busybox")
        for applet in _run([str(BUSYBOX), "--list-full"]).split():
            link = root / applet
            if not link.exists():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to("/bin/busybox")
        modules = module_order(versions[0], GUEST_MODULES)
        for name, ko in modules:
            _copy(ko, root, f"/lib/modules/{name}.ko")
        (root / "etc/hw/modules").write_text("".join(f"{n}\n" for n, _ in modules))
        (root / "etc/hw/redirect.nft").write_text(redirect_ruleset())
        _copy(NFT, root, "/sbin/nft")
        for lib in shared_libraries(NFT):
            _copy(lib, root, str(lib))
        for f in ("/etc/protocols", "/etc/services"):
            if Path(f).exists():
                _copy(Path(f), root)
        (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (root / "etc/group").write_text("root:x:0:\n")
        _run(["gcc", "-static", "-O2", "-o", str(root / "sbin/hwguest"), str(ASSETS / "hwguest.c")])
        shutil.copy2(ASSETS / "init", root / "init")
        os.chmod(root / "init", 0o755)
        image = work / "image"
        image.mkdir()
        shutil.copy2(vmlinuz[0], image / "vmlinuz")
        with open(image / "initrd.img", "wb") as out:
            cpio = subprocess.Popen(
                "find . -print0 | cpio --null -o -H newc --quiet | gzip -6",
                shell=True,
                cwd=root,
                stdout=out,
                stderr=subprocess.PIPE,
            )
            _, err = cpio.communicate()
        if cpio.returncode != 0:
            raise GuestImageError(f"cpio failed: {err.decode(errors='replace')}")
        manifest = {
            "key": key,
            "kernel_package": package,
            "kernel": versions[0].name,
            "modules": [n for n, _ in modules],
            "initrd_bytes": (image / "initrd.img").stat().st_size,
        }
        (image / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        shutil.rmtree(folder, ignore_errors=True)
        image.rename(folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)
