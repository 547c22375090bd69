"""board/: every board's pinhole.toml is accepted by the real binary (`pinhole --check`), and
every board folder says what was verified on real hardware.

`gst:` configurations need a pinhole built with `--features gstreamer` ($PINHOLE_GST_BIN, made by
tests/run's build step); the default release binary must refuse them naming that feature.
"""

from __future__ import annotations

import os
import re
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


SCHEMES = ("exec:", "gst:", "v4l2:", "rtsp:", "rtsps:", "testsrc")
REPO_DIRS = ("board/", "systemd/", "tests/", "bench/", "docs/", "firmware/", "web-ui/")


@pytest.mark.parametrize("board", BOARDS, ids=[b.name for b in BOARDS])
def test_the_board_readme_agrees_with_its_config_and_the_repository(board):
    """What a README can get wrong as the toml and the tree move on: the source it describes
    under "How it works" (the first source URI it quotes there must be the toml's active source,
    word for word where it quotes words), the encoder options it quotes (every backticked option
    span whose first flag the toml uses is in the toml's source as written), and every file of
    the repository it points to (which must exist)."""
    readme = (board / "README.md").read_text()
    source = tomllib.loads((board / "pinhole.toml").read_text())["source"]
    words = source.split()
    how = readme.split("## How it works", 1)
    assert len(how) == 2, f"{board.name}/README.md has no '## How it works' section"
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", how[1])]
    quoted = next((s for s in spans if s.startswith(SCHEMES)), None)
    assert quoted, f"{board.name}/README.md quotes no source URI under 'How it works'"
    scheme = quoted.split(":", 1)[0] + ":"
    assert source.startswith(scheme), \
        f"{board.name}/README.md describes a `{scheme}` source; pinhole.toml's source is {source!r}"
    for w in quoted.split():
        if w in ("…", "!", "...", scheme):
            continue
        assert w in words, f"{board.name}/README.md describes `{quoted}`, but pinhole.toml's source is {source!r} " \
                           f"(no {w!r})"
    for span in spans:
        if span.startswith("--") and span.split()[0] in words:
            assert span in source, f"{board.name}/README.md quotes `{span}`; pinhole.toml's source is {source!r}"
    for ref in re.findall(r"(?<![\w./])((?:\.\./)?[\w.-]+(?:/[\w.-]+)+)", readme):
        ref = ref.rstrip(".")
        if ref.startswith("../"):
            path = (board / ref).resolve()
        elif ref.startswith(REPO_DIRS):
            path = REPO / ref
        elif (board / ref.split("/")[0]).exists():
            path = board / ref
        else:
            continue  # device nodes, MIME-like words (SPS/PPS), install paths on the board
        assert path.exists(), f"{board.name}/README.md refers to {ref}, which does not exist"
