"""The lab guest image: module order from `depends=`, and (root, apt lists) build + cache."""

from __future__ import annotations

import os
import time
import tomllib
from pathlib import Path

import pytest

from hyperwall.lab import guest_image
from hyperwall.lab.guest_image import GuestImageError, ensure_image, module_order


def _ko(folder: Path, name: str, depends: str) -> None:
    data = (
        b"\x7fELF junk\x00license=GPL\x00depends=" + depends.encode() + b"\x00name=" + name.encode()
    )
    (folder / f"{name}.ko").write_bytes(data + b"\x00")


def test_modules_come_after_their_dependencies(tmp_path: Path) -> None:
    (tmp_path / "net").mkdir()
    _ko(tmp_path / "net", "virtio_net", "virtio,net_failover")
    _ko(tmp_path, "virtio", "virtio_ring")
    _ko(tmp_path, "virtio_ring", "")
    _ko(tmp_path, "net_failover", "failover")
    _ko(tmp_path, "failover", "")
    order = [n for n, _ in module_order(tmp_path, ["virtio_net", "virtio"])]
    assert order == ["virtio_ring", "virtio", "failover", "net_failover", "virtio_net"]


def test_a_missing_module_is_named(tmp_path: Path) -> None:
    _ko(tmp_path, "virtio", "virtio_ring")
    with pytest.raises(GuestImageError, match="virtio_ring"):
        module_order(tmp_path, ["virtio"])


def _can_build() -> str | None:
    if os.geteuid() != 0:
        return "builds under /var/cache/hyperwall: root only"
    missing = guest_image.missing_tools()
    if missing:
        return f"missing {', '.join(missing)}"
    try:
        guest_image.kernel_package()
    except GuestImageError as exc:
        return str(exc)
    return None


@pytest.mark.slow
@pytest.mark.skipif(_can_build() is not None, reason=str(_can_build()))
def test_image_is_built_once_and_cached() -> None:
    first = ensure_image()
    assert first.kernel.stat().st_size > 1_000_000
    assert first.initrd.stat().st_size > 100_000
    built = first.initrd.stat().st_mtime
    started = time.monotonic()
    second = ensure_image()
    assert second == first
    assert second.initrd.stat().st_mtime == built  # not rebuilt
    assert time.monotonic() - started < 10


def test_the_guest_assets_ship_in_the_wheel() -> None:
    """pyproject's package-data covers every file the image build reads from `guest/`."""
    root = Path(__file__).resolve().parents[2]
    config = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["hyperwall.lab"]
    package = root / "hyperwall" / "lab"
    shipped = {p for pattern in patterns for p in package.glob(pattern)}
    assets = set(guest_image.ASSETS.iterdir())
    assert {guest_image.ASSETS / "init", guest_image.ASSETS / "hwguest.c"} <= assets <= shipped
