"""A libvirt Vagrant box built locally from the test harness's debootstrap rootfs.

    python3 tests/vagrant/box.py [--suite bookworm]      # prints the cached .box

The harness's cached rootfs (tests/harness/labhosts.py) plus what a Vagrant box has: a kernel
(linux-image-amd64 from the machine's own Debian mirror, through apt in the rootfs via the
harness's forward proxy), openssh-server, sudo, rsync, the `vagrant` user with Vagrant's
well-known insecure public key (read from the vagrant package installed on this machine),
systemd-networkd on DHCP, a serial console. The disk is MBR + one ext4 partition written with
`mkfs.ext4 -E offset=... -d ROOTFS` (no loop device needed to fill it) and extlinux (grub
cannot install on a loop device here), converted to qcow2; the box is that image plus libvirt's
metadata.json. Cached under /var/cache/demolab/vagrant/ by a key of its recipe.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "harness"))

import labhosts  # noqa: E402

CACHE = Path(os.environ.get("DEMOLAB_VAGRANT_CACHE", "/var/cache/demolab/vagrant"))
# Bump when the recipe below changes: the cache key includes it.
BOX_RECIPE = "1"
BOX_PACKAGES = ["linux-image-amd64", "initramfs-tools", "openssh-server", "sudo", "rsync"]
DISK_GB = 24
PART_OFFSET = 1 << 20  # the partition starts at 1 MiB
MBR = Path("/usr/lib/syslinux/mbr/mbr.bin")
# The Debian releases the boxes are built for, by the Vagrantfile's release number.
SUITE_OF_RELEASE = {"12": "bookworm", "13": "trixie"}


def log(msg: str) -> None:
    print(f"[box] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def insecure_public_key() -> str:
    """Vagrant's well-known insecure public key, from the vagrant package on this machine."""
    found = sorted(Path("/usr/share/rubygems-integration/all/gems").glob("vagrant-*/keys/vagrant.pub"))
    found += sorted(Path("/opt/vagrant/embedded/gems").glob("**/vagrant-*/keys/vagrant.pub"))
    if not found:
        raise SystemExit("no keys/vagrant.pub of an installed vagrant: install Debian's vagrant (make deps)")
    return found[-1].read_text().strip()


def box_path(suite: str) -> Path:
    base = labhosts.base_tarball(suite)
    key = hashlib.sha256(" ".join([BOX_RECIPE, suite, base.name, str(DISK_GB), *BOX_PACKAGES,
                                   insecure_public_key()]).encode()).hexdigest()[:12]
    return CACHE / f"debian-{suite}-{key}.box"


def chroot(root: Path, command: str, proxy: str) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8",
           "http_proxy": proxy}
    run(["nice", "-n", "10", "chroot", str(root), "/bin/sh", "-ec", command], env=env)


def customize(root: Path, proxy: str) -> None:
    """What a Vagrant box has on top of the harness's rootfs."""
    mounts = []
    try:
        for what in ("proc", "sys", "dev"):
            target = root / what
            run(["mount", "--rbind", f"/{what}", str(target)])
            run(["mount", "--make-rslave", str(target)])
            mounts.append(target)
        (root / "usr/sbin/policy-rc.d").write_text("#!/bin/sh\nexit 101\n")
        os.chmod(root / "usr/sbin/policy-rc.d", 0o755)
        (root / "etc/apt/apt.conf.d/00box-proxy").write_text(f'Acquire::http::Proxy "{proxy}";\n')
        log(f"apt-get install {' '.join(BOX_PACKAGES)} in the rootfs (through {proxy})")
        chroot(root, "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
               + " ".join(BOX_PACKAGES) + " >/dev/null && apt-get clean", proxy)
        key = insecure_public_key()
        chroot(root, "id vagrant >/dev/null 2>&1 || useradd -m -s /bin/bash vagrant; "
               "echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant; chmod 0440 /etc/sudoers.d/vagrant; "
               "install -d -m 700 -o vagrant -g vagrant /home/vagrant/.ssh; "
               f"echo '{key}' > /home/vagrant/.ssh/authorized_keys; "
               "chown vagrant:vagrant /home/vagrant/.ssh/authorized_keys; "
               "chmod 600 /home/vagrant/.ssh/authorized_keys; "
               "echo 'vagrant:vagrant' | chpasswd", proxy)
    finally:
        for target in reversed(mounts):
            subprocess.run(["umount", "-R", "-l", str(target)], check=False)
        for f in ("usr/sbin/policy-rc.d", "etc/apt/apt.conf.d/00box-proxy"):
            (root / f).unlink(missing_ok=True)
    # Not the harness's: no root login by key, the box's own name, no proxy.
    shutil.rmtree(root / "root/.ssh", ignore_errors=True)
    (root / "etc/hostname").write_text("demolab-box\n")
    (root / "etc/hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tdemolab-box\n::1\tlocalhost ip6-localhost\n")
    (root / "etc/ssh/sshd_config.d/vagrant.conf").write_text("UseDNS no\n")
    # The harness's rootfs masks the console getty; a VM's serial console gets one.
    (root / "etc/systemd/system/console-getty.service").unlink(missing_ok=True)
    network = root / "etc/systemd/network/50-dhcp.network"
    network.parent.mkdir(parents=True, exist_ok=True)
    network.write_text("[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in ("systemd-networkd.service", "systemd-resolved.service"):
        src = Path("/lib/systemd/system") / unit
        if (root / src.relative_to("/")).exists() and not (wants / unit).is_symlink():
            (wants / unit).symlink_to(src)


def disk_image(root: Path, work: Path) -> Path:
    """MBR + ext4 (mkfs.ext4 -d) + extlinux, as qcow2."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise SystemExit(f"no kernel in {root / 'boot'}")
    version = kernels[-1].name.removeprefix("vmlinuz-")
    fs_uuid = str(uuid.uuid4())
    (root / "etc/fstab").write_text(f"UUID={fs_uuid} / ext4 errors=remount-ro 0 1\n")
    ext = root / "boot/extlinux"
    ext.mkdir(exist_ok=True)
    (ext / "extlinux.conf").write_text(
        "DEFAULT debian\nTIMEOUT 1\nPROMPT 0\nSERIAL 0 115200\nLABEL debian\n"
        f"  LINUX /boot/vmlinuz-{version}\n  INITRD /boot/initrd.img-{version}\n"
        f"  APPEND root=UUID={fs_uuid} ro console=tty0 console=ttyS0,115200n8 net.ifnames=0 quiet\n")
    raw = work / "disk.raw"
    size = DISK_GB << 30
    with open(raw, "wb") as f:
        f.truncate(size)
    run(["sfdisk", "-q", str(raw)], input=f"label: dos\nstart={PART_OFFSET // 512}, type=83, bootable\n",
        text=True)
    blocks = (size - PART_OFFSET) // 4096
    # Features extlinux 6.04 reads (no 64bit, no orphan_file, no checksum seed).
    log("mkfs.ext4 -d rootfs into the partition")
    run(["nice", "-n", "10", "mkfs.ext4", "-q", "-F", "-b", "4096", "-L", "root", "-U", fs_uuid,
         "-O", "^64bit,^metadata_csum_seed,^orphan_file" if _has_orphan_file() else "^64bit,^metadata_csum_seed",
         "-E", f"offset={PART_OFFSET}", "-d", str(root), str(raw), str(blocks)])
    mnt = work / "mnt"
    mnt.mkdir()
    run(["mount", "-o", f"loop,offset={PART_OFFSET}", str(raw), str(mnt)])
    try:
        run(["extlinux", "--install", str(mnt / "boot/extlinux")], stdout=subprocess.DEVNULL)
    finally:
        run(["umount", str(mnt)])
    with open(raw, "r+b") as f:
        f.write(MBR.read_bytes()[:440])
    img = work / "box.img"
    log("qemu-img convert to qcow2")
    run(["nice", "-n", "10", "qemu-img", "convert", "-O", "qcow2", str(raw), str(img)])
    raw.unlink()
    return img


def _has_orphan_file() -> bool:
    out = subprocess.run(["mke2fs", "-V"], capture_output=True, text=True)
    version = (out.stdout + out.stderr).split()[1] if out.returncode == 0 else "1.0"
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) >= (1, 47)


def build(suite: str, proxy_url: str | None = None) -> Path:
    """The cached box of SUITE, built if missing (needs the harness's forward proxy)."""
    box = box_path(suite)
    if box.exists():
        return box
    t0 = time.monotonic()
    CACHE.mkdir(parents=True, exist_ok=True)
    proxy = labhosts.ForwardProxy() if proxy_url is None else None
    try:
        if proxy is not None:
            proxy.start()
            proxy_url = proxy.url
        with tempfile.TemporaryDirectory(dir=CACHE, prefix="build-") as tmp:
            work = Path(tmp)
            root = work / "root"
            log(f"copying the harness's {suite} rootfs")
            run(["cp", "-a", str(labhosts.base_dir(suite)), str(root)])
            customize(root, proxy_url)
            disk_image(root, work)
            shutil.rmtree(root)
            (work / "metadata.json").write_text(json.dumps(
                {"provider": "libvirt", "format": "qcow2", "virtual_size": DISK_GB}))
            part = box.with_suffix(".part")
            run(["tar", "-C", str(work), "-cf", str(part), "metadata.json", "box.img"])
            part.rename(box)
    finally:
        if proxy is not None:
            proxy.stop()
    log(f"box {box} ({box.stat().st_size >> 20} MiB) built in {time.monotonic() - t0:.0f} s")
    return box


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--suite", default=labhosts.SUITE, choices=labhosts.SUITES)
    a = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("building a box needs root (chroot, mounts)")
    print(build(a.suite))


if __name__ == "__main__":
    main()
