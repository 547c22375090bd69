"""The SD card, booted: the Raspberry Pi image's twin in QEMU (board/sd_twin.py), driven from the
host the way an owner drives a camera.

Real here: U-Boot 2025.01 running the image's own boot script (yocto/meta-pinhole/dynamic-layers/
rauc-raspberrypi/recipes-bsp/rpi-u-boot-scr/files/boot.cmd.in, made into boot.scr by mkimage as
rpi-u-boot-scr does) with its environment in uboot.env on the FAT partition; the card's partitions
as the image's .wks lays them out, on an emulated SD card (/dev/mmcblk0); RAUC 1.15.2 built from
the tarball meta-rauc builds (same SHA-256), reading /usr/lib/rauc/system.conf from the layer,
with `bootloader=uboot` through libubootenv's fw_setenv; signed verity bundles (device-mapper in
the guest's kernel); systemd with the image's units from the layer and ota/device; OpenSSH; real
resets and power cuts (QEMU killed).

Not shown here (yocto/README.md, "The SD card's twin"): the Pi's firmware and config.txt, its
kernel and device tree, Yocto's own builds of these packages (Debian's stand in), SD card speed.
"""

from __future__ import annotations

import subprocess
import time

from twin import PASSWORD, camera, new_camera, twin_parts  # noqa: F401 (fixtures)

# One camera for this module's tests, in this order: its first boot, then bundles an owner might
# install (each test starts from what the one before left: slot A running 1.0.0, then slot B).


def slots_of(rs: dict) -> dict[str, dict]:
    return {name: s for d in rs["slots"] for name, s in d.items()}


def test_first_boot_imports_the_owners_file_streams_and_marks_the_slot_good(camera):
    cam = camera
    t_ssh = cam.wait_ssh()
    t_stream, st = cam.wait_streaming()
    print(f"power-on -> SSH {t_ssh:.1f} s, -> streaming {t_stream:.1f} s")
    # The owner's file was imported and is gone from the card; its password guards pinhole.
    assert cam.ssh("test ! -e /boot/pinhole-setup.toml", check=False).returncode == 0, "the file stayed on the card"
    assert "imported" in cam.ssh("cat /boot/pinhole-setup.result.txt").stdout
    assert cam.ssh(f"grep -rlF {PASSWORD} /boot", check=False).stdout == "", "the password is on the card"
    assert cam.get("/api/status")[0] == 200
    # pinhole's state is on /data (the layer's bind mount), not in the root's volatile /var/lib.
    src = cam.ssh("findmnt -n -o SOURCE /var/lib/private/pinhole").stdout
    assert "mmcblk0p5" in src, src
    # The slot is marked good once boot-complete.target is reached (pinhole-ota-commit).
    deadline = time.time() + 120
    while time.time() < deadline:
        rs = cam.rauc_status()
        if slots_of(rs)["rootfs.0"].get("boot_status") == "good":
            break
        time.sleep(3)
    assert rs["booted"] == "A", rs
    assert slots_of(rs)["rootfs.0"].get("boot_status") == "good", rs
    env = cam.env()
    assert env.get("BOOT_A_LEFT") == "3" and env.get("BOOT_ORDER", "A B").split()[0] == "A", env


def test_a_bundle_larger_than_the_slot_is_refused_before_anything_is_written(camera, twin_parts):
    """A release whose root file system image (1100 MiB, mostly empty, so the bundle is small) is
    larger than the card's 1024 MiB slot: pinhole-ota refuses it before the upload (the camera's
    slot sizes against the manifest's image size), and RAUC 1.15.2 on the camera, given it by hand,
    refuses it too, before writing the slot."""
    cam = camera
    cam.wait_streaming()
    bundle = twin_parts.bundle("3.0.0-too-big", image_mb=1100)
    # The start of slot B (RAUC writes an ext4 image from its first block).
    head = "head -c 16M /dev/mmcblk0p3 | sha256sum | cut -c1-64"
    before = cam.ssh(head).stdout.strip()
    p = cam.ota(bundle)
    out = p.stdout + p.stderr
    assert p.returncode == 3, out
    assert "bundle refused" in out and "rootfs image is 1153.4 MB" in out and "holds 1073.7 MB" in out, out
    assert "==> upload" not in out, out
    # RAUC itself, given the bundle anyway (copied over SSH, installed by hand).
    with open(bundle, "rb") as f:
        subprocess.run(["ssh", "-F", str(twin_parts.ssh_config), "-p", str(cam.guest.ssh_port), "root@127.0.0.1",
                        "mkdir -p /home/ota && cat > /home/ota/too-big.raucb"], stdin=f, check=True, timeout=600)
    p = cam.ssh("rauc install /home/ota/too-big.raucb", check=False, timeout=600)
    print(p.stdout + p.stderr)
    assert p.returncode != 0, p.stdout + p.stderr
    assert "is too small for image" in p.stdout + p.stderr, p.stdout + p.stderr
    cam.ssh("rm -f /home/ota/too-big.raucb")
    assert cam.ssh(head).stdout.strip() == before, "slot B was written"
    rs = cam.rauc_status()
    assert rs["booted"] == "A" and rs["boot_primary"] == "rootfs.0", rs


def test_a_bundle_whose_pinhole_never_becomes_ready_rolls_back_and_says_why(camera, twin_parts):
    cam = camera
    cam.wait_streaming()
    bundle = twin_parts.bundle("2.0.1-never-ready", never_ready=True, trial_s=90)
    p = cam.ota(bundle)
    out = p.stdout + p.stderr
    assert p.returncode == 6, out
    assert "ROLLED BACK: the camera came back on slot A" in out, out
    assert "slot B did not reach boot-complete.target" in out, out
    assert "pinhole.service" in out, "the trial boot's journal is not reported"
    rs = cam.rauc_status()
    assert rs["booted"] == "A", rs
    assert slots_of(rs)["rootfs.1"].get("boot_status") == "bad", rs
    assert cam.ssh(". /etc/os-release; echo $IMAGE_VERSION").stdout.strip() == "1.0.0"
    env = cam.env()
    assert env["BOOT_ORDER"].split()[0] == "A", env
    assert cam.wait_streaming(timeout=120)[1]["fragments"] >= 3


def test_a_signed_verity_bundle_installs_boots_the_other_slot_and_is_marked_good(camera, twin_parts):
    cam = camera
    cam.wait_streaming()
    bundle = twin_parts.bundle("2.0.0")
    t0 = time.time()
    p = cam.ota(bundle)
    took = time.time() - t0
    assert p.returncode == 0, p.stdout + p.stderr
    print(f"pinhole-ota of a {bundle.stat().st_size >> 20} MiB verity bundle: {took:.0f} s")
    out = p.stdout + p.stderr
    assert "the camera runs 2.0.0 on slot B (marked good)" in out, out
    rs = cam.rauc_status()
    slots = slots_of(rs)
    assert rs["booted"] == "B", rs
    assert slots["rootfs.1"].get("boot_status") == "good", rs
    assert slots["rootfs.1"]["slot_status"]["bundle"]["version"] == "2.0.0", rs
    env = cam.env()
    assert env["BOOT_ORDER"].split()[0] == "B" and env["BOOT_B_LEFT"] == "3", env
    assert cam.ssh(". /etc/os-release; echo $IMAGE_VERSION").stdout.strip() == "2.0.0"
    # The configuration and keys on /data came through the update (SSH with the owner's key just
    # worked); pinhole streams with the imported password.
    assert cam.wait_streaming(timeout=120)[1]["fragments"] >= 3
