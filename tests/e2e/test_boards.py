"""board/: every board's pinhole.toml is accepted by the real binary (`pinhole --check`), and
every board folder says what was verified on real hardware.

`gst:` configurations need a pinhole built with `--features gstreamer` ($PINHOLE_GST_BIN, made by
tests/run's build step); the default release binary must refuse them naming that feature.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, pinhole_bin

BOARDS = sorted(p.parent for p in (REPO / "board").glob("*/pinhole.toml"))
EXPECTED = {"rpi4", "rpi5", "jetson-orin-nx", "jetson-orin-nano", "uvc-h264"}


def gst_bin() -> str:
    path = Path(os.environ.get("PINHOLE_GST_BIN") or REPO / "target" / "pinhole-gst")
    if not path.is_file():
        pytest.fail(f"{path} is missing: build it with `cargo build -p pinhole --features gstreamer` "
                    "and copy target/debug/pinhole there (tests/run's build step does)")
    return str(path)


def check(binary: str, config: Path) -> subprocess.CompletedProcess:
    return subprocess.run([binary, "--config", str(config), "--check"], capture_output=True,
                          text=True, timeout=15)


def test_every_supported_board_has_a_folder():
    assert {b.name for b in BOARDS} >= EXPECTED, f"board folders: {[b.name for b in BOARDS]}"


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_the_board_config_passes_pinhole_check(board):
    config = board / "pinhole.toml"
    source = tomllib.loads(config.read_text())["source"]
    if source.startswith("gst:"):
        p = check(pinhole_bin(), config)
        assert p.returncode == 2 and "gstreamer" in p.stderr, \
            f"the default build should refuse gst: naming the feature: {p.returncode} {p.stderr!r}"
        p = check(gst_bin(), config)
    else:
        p = check(pinhole_bin(), config)
    assert p.returncode == 0, f"{config}: exit {p.returncode}: {p.stderr.strip()}"
    assert "configuration OK" in p.stdout, p.stdout
    readme = (board / "README.md").read_text()
    assert "verified" in readme.lower(), f"{board}/README.md must say what was verified"


def test_check_reports_a_bad_config_in_one_line_and_exits_2(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('source = "testsrc"\nfragment_ms = 50\n')
    p = check(pinhole_bin(), bad)
    assert p.returncode == 2 and p.stdout == "", (p.returncode, p.stdout)
    line = p.stderr.strip()
    assert "\n" not in line and "fragment_ms" in line and "100..=300" in line, line
