"""Issue 22, finding 7: `pinhole-ota` on a first connection to a camera shows the SSH host key
fingerprint it is about to trust and how to compare it, and trusts it only when confirmed.
Against test_ota's stand-in camera (a booted Debian root with its real sshd)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from test_ota import TOOL as REPO_TOOL
from test_ota import ota  # noqa: F401  (the stand-in camera fixture)

# PINHOLE_OTA_TOOL: another pinhole-ota to judge (the one before the fix, for tests/README.md).
TOOL = Path(os.environ.get("PINHOLE_OTA_TOOL") or REPO_TOOL)


def test_pinhole_ota_shows_the_host_key_it_is_about_to_trust_and_trusts_it_only_when_confirmed(ota, tmp_path):  # noqa: F811
    """The stand-in camera's real sshd, a fresh known_hosts and no StrictHostKeyChecking=no:
    without a terminal, pinhole-ota shows the fingerprint and where to compare it and stops
    (nothing trusted); a wrong --trust-host-key is refused; the right one is added to
    known_hosts and the run goes on; the next run asks nothing. Before the fix the first run
    ended in ssh's "Host key verification failed." with no fingerprint shown."""
    known = tmp_path / "known_hosts"
    conf = tmp_path / "ssh_config"
    conf.write_text(f"Host *\n  UserKnownHostsFile {known}\n  LogLevel ERROR\n  IdentityFile {ota.id}\n"
                    "  IdentitiesOnly yes\n")
    keys = sorted((ota.device.merged / "etc/ssh").glob("ssh_host_*_key.pub"))
    assert keys, "the stand-in camera has no host keys"
    ref = {subprocess.run(["ssh-keygen", "-lf", str(k)], capture_output=True, text=True, check=True).stdout.split()[1]
           for k in keys}
    bundle = ota.bundle("1.0")
    cmd = ["python3", str(TOOL), "-F", str(conf), "--http-port", str(ota.http_port), "--check-only", str(bundle),
           ota.address]

    def run(*extra: str) -> subprocess.CompletedProcess:
        p = subprocess.run([*cmd[:-2], *extra, *cmd[-2:]], capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        print(f"--- pinhole-ota {' '.join(extra)}: exit {p.returncode}\n{p.stdout}{p.stderr}")
        return p

    first = run()
    assert first.returncode == 4, first.returncode
    assert "==> host key" in first.stdout, "no host key stage on a first connection"
    shown = set(re.findall(r"SHA256:[A-Za-z0-9+/]{43}", first.stdout))
    assert shown and shown <= ref, f"shown {shown}, the camera's keys are {ref}"
    assert "device line" in first.stdout and "pinhole-setup.result.txt" in first.stdout
    assert "--trust-host-key SHA256:" in first.stderr, first.stderr
    assert not known.exists() or known.read_text() == "", "a key was trusted without confirmation"
    wrong = run("--trust-host-key", "SHA256:" + "A" * 43)
    assert wrong.returncode == 4 and "NOT trusted" in wrong.stderr, wrong.stderr
    assert not known.exists() or known.read_text() == ""
    fp = sorted(shown)[0]
    ok = run("--trust-host-key", fp)
    assert ok.returncode == 0, ok.stderr
    assert "trusted: added to" in ok.stdout and known.read_text().strip(), known
    again = run()
    assert again.returncode == 0 and "==> host key" not in again.stdout, again.stdout
