"""The Yocto layer (yocto/meta-pinhole) and the kas files (yocto/kas), checked without a build.

A full image build cannot run on these machines (it fetches every source from the internet and
takes hours on 2 cores); everything around it runs here:

* oelint-adv (PyPI, `--release wrynose`) is clean on every recipe and append of yocto/; only
  `oelint.vars.homepageping` (needs the network) is suppressed globally, every other
  suppression is inline with its reason on a comment line of its own. A recipe with known
  faults is linted too, so a linter that checks nothing cannot pass.
* Every kas file is valid against kas's own JSON schema (the one the kas package ships); the
  lock file pins, by full commit, every repository any kas file names, and each board file
  reaches it through base.yml.
* pinhole's crates file matches Cargo.lock (same crates, versions, checksums) — read here
  independently of yocto/scripts/update-crates, which must also report it up to date; the
  build-dependency file matches the crates that need libclang or libv4l2.
* The units the recipes install are the files in systemd/ (the layer holds only drop-ins and
  its own new units), every file a recipe installs from the repository exists, and each
  machine's default configuration (board/*/pinhole.toml) passes `pinhole --check` (with the
  gstreamer build where the recipe enables that feature); LIC_FILES_CHKSUM matches.
* `bitbake -p`, then `bitbake -e pinhole-image` and `bitbake -e pinhole`, through kas against
  local checkouts of the pinned layers when PINHOLE_YOCTO_LAYERS names a directory of them
  (yocto/scripts/parse-stack; ~3 min cold, seconds with its cache). Without it that one test
  is skipped and says so: this machine cannot fetch the layers itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import REPO, pinhole_bin

YOCTO = REPO / "yocto"
LAYER = YOCTO / "meta-pinhole"
KAS_DIR = YOCTO / "kas"
LOCK = KAS_DIR / "base.lock.yml"
PINHOLE_RECIPE = LAYER / "recipes-pinhole/pinhole/pinhole_git.bb"
CRATES_INC = LAYER / "recipes-pinhole/pinhole/pinhole-crates.inc"
BUILD_DEPS_INC = LAYER / "recipes-pinhole/pinhole/pinhole-build-deps.inc"
VENV = Path(os.environ.get("PINHOLE_YOCTO_VENV") or REPO / "tests/.cache/yocto-venv")
BOARD_KAS = ["raspberrypi4-64", "raspberrypi5", "jetson-orin-nano-devkit"]


def venv_tool(name: str) -> str:
    path = VENV / "bin" / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: tests/run's deps step installs it (tests/deps.d/yocto.sh: "
                    "kas and oelint-adv from PyPI into tests/.cache/yocto-venv)")
    return str(path)


def recipes() -> list[Path]:
    found = sorted(p for p in YOCTO.rglob("*") if p.suffix in (".bb", ".bbappend") and p.is_file())
    assert found, "no recipes under yocto/"
    return found


def oelint(files: list[Path]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [venv_tool("oelint-adv"), "--release", "wrynose", "--quiet", "--jobs", "2",
         "--suppress", "oelint.vars.homepageping", "--",
         *map(str, files)],
        capture_output=True, text=True, timeout=120)


# ---------------------------------------------------------------- oelint-adv


def test_oelint_adv_is_clean_on_every_recipe_and_append():
    files = recipes()
    p = oelint(files)
    findings = (p.stdout + p.stderr).strip()
    assert p.returncode == 0 and not findings, \
        f"oelint-adv --release wrynose found (exit {p.returncode}):\n{findings}"
    print(f"oelint-adv: {len(files)} recipes/appends clean")


def test_oelint_adv_does_find_faults(tmp_path):
    """The linter runs for real: a recipe with tabs, no LICENSE and AUTOREV is refused."""
    bad = tmp_path / "bad_1.0.bb"
    bad.write_text('SUMMARY = "x"\nSRC_URI = "git://example.com/x.git;protocol=https;branch=main"\n'
                   'SRCREV = "${AUTOREV}"\n\ndo_install() {\n\tinstall -d ${D}${bindir}\n}\n')
    p = oelint([bad])
    out = p.stdout + p.stderr
    assert p.returncode != 0, out
    for rule in ("oelint.var.mandatoryvar.LICENSE", "oelint.tabs.notabs", "oelint.vars.autorev"):
        assert rule in out, f"{rule} not reported:\n{out}"


def test_every_inline_suppression_gives_its_reason():
    """Only homepageping is suppressed globally (above); each `# nooelint:` has its reason on a
    comment line above it in the same paragraph (or, for the file-wide findings oelint reports
    on line 1, on the line after)."""
    count = 0
    for f in recipes() + sorted(LAYER.rglob("*.inc")):
        lines = f.read_text().splitlines()
        for i, line in enumerate(lines):
            if not re.match(r"#\s+nooelint:", line):
                continue
            count += 1
            if i == 0:
                reasons = lines[1:2]
            else:  # the comment lines above it, up to a blank line (one reason may serve a group)
                above = []
                for prev in reversed(lines[:i]):
                    if not prev.strip():
                        break
                    above.append(prev)
                reasons = above
            assert any(r.startswith("#") and "nooelint" not in r and len(r.strip("# ")) > 10
                       for r in reasons), \
                f"{f.relative_to(REPO)}:{i + 1}: `{line}` without a reason on a comment line " \
                f"{'after' if i == 0 else 'above'} it"
    assert count > 0  # the layer has some (the crates file's form, meta-raspberrypi's machines)


# ---------------------------------------------------------------- kas


def load_yaml(path: Path):
    out = subprocess.run([venv_tool("python"), "-c",
                          "import json, sys, yaml; json.dump(yaml.safe_load(open(sys.argv[1])), sys.stdout)",
                          str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, f"{path}: not YAML:\n{out.stderr}"
    return json.loads(out.stdout)


def kas_validate(paths: list[Path]) -> subprocess.CompletedProcess:
    """Each file against the schema the kas package ships (kas/schema-kas.json)."""
    script = """
import json, sys, yaml, jsonschema, kas, pathlib
schema = json.loads((pathlib.Path(kas.__file__).parent / "schema-kas.json").read_text())
bad = 0
for f in sys.argv[1:]:
    errors = list(jsonschema.Draft7Validator(schema).iter_errors(yaml.safe_load(open(f))))
    for e in errors:
        print(f"{f}: {'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}")
    bad += bool(errors)
print(f"{len(sys.argv) - 1 - bad} of {len(sys.argv) - 1} valid (kas {kas.__version__})")
sys.exit(1 if bad else 0)
"""
    return subprocess.run([venv_tool("python"), "-c", script, *map(str, paths)],
                          capture_output=True, text=True, timeout=60)


def kas_files() -> list[Path]:
    files = sorted(KAS_DIR.glob("*.yml"))
    assert {f"{m}.yml" for m in BOARD_KAS} <= {f.name for f in files}, [f.name for f in files]
    return files


def test_every_kas_file_is_valid_against_kas_own_schema(tmp_path):
    p = kas_validate(kas_files())
    assert p.returncode == 0, p.stdout + p.stderr
    print(p.stdout.strip())
    # And the check can fail: a misspelt key and a bad header version are refused.
    broken = tmp_path / "broken.yml"
    broken.write_text("header:\n  version: 99\nmachin: raspberrypi4-64\n")
    p = kas_validate([broken])
    assert p.returncode != 0 and "machin" in p.stdout and "version" in p.stdout, p.stdout


def includes_of(path: Path) -> list[Path]:
    """The include chain of a kas file (paths are relative to the repository root)."""
    out, todo = [], [path]
    while todo:
        f = todo.pop()
        out.append(f)
        todo += [REPO / i for i in (load_yaml(f).get("header") or {}).get("includes", [])
                 if isinstance(i, str)]
    return out


def test_the_lock_file_pins_every_repository_a_kas_file_names():
    lock = load_yaml(LOCK)["overrides"]["repos"]
    named: dict[str, str] = {}
    for f in kas_files():
        if f == LOCK:
            continue
        for name, repo in (load_yaml(f).get("repos") or {}).items():
            if repo and repo.get("url"):
                named[name] = f.name
    assert named, "no repositories with a url in yocto/kas"
    missing = sorted(set(named) - set(lock))
    assert not missing, f"not pinned in {LOCK.name}: {missing} (named in {[named[m] for m in missing]}); " \
        "run `kas lock --update` on the board file"
    stray = sorted(set(lock) - set(named))
    assert not stray, f"{LOCK.name} pins repositories no kas file names: {stray}"
    for name, entry in lock.items():
        assert re.fullmatch(r"[0-9a-f]{40}", entry.get("commit", "")), \
            f"{LOCK.name}: {name} must be pinned by a full commit id, not {entry}"
    # kas applies base.lock.yml wherever base.yml is included: every board file must include it.
    for m in BOARD_KAS:
        chain = includes_of(KAS_DIR / f"{m}.yml")
        assert KAS_DIR / "base.yml" in chain, f"{m}.yml does not include base.yml: {chain}"
        machine = [load_yaml(f).get("machine") for f in chain if load_yaml(f).get("machine")]
        assert machine and machine[0] == m, f"{m}.yml sets machine {machine}"
    print(f"{len(lock)} repositories pinned: {', '.join(sorted(lock))}")


# ---------------------------------------------------------------- the pinhole recipe


def cargo_lock_crates() -> dict[tuple[str, str], str]:
    lock = tomllib.loads((REPO / "Cargo.lock").read_text())
    return {(p["name"], p["version"]): p.get("checksum", "")
            for p in lock["package"] if "crates.io" in p.get("source", "")}


def test_the_crates_file_matches_cargo_lock():
    text = CRATES_INC.read_text()
    uris = re.findall(r"crate://crates\.io/([^/\s]+)/([^\s\\]+)", text)
    sums = dict(re.findall(r'SRC_URI\[([^\]]+)\.sha256sum\] = "([0-9a-f]{64})"', text))
    lock = cargo_lock_crates()
    rerun = "run yocto/scripts/update-crates and commit the result"
    assert sorted(uris) == sorted(lock), (
        f"{CRATES_INC.name} and Cargo.lock list different crates ({rerun}): "
        f"only in the .inc {sorted(set(uris) - set(lock))[:10]}, "
        f"only in Cargo.lock {sorted(set(lock) - set(uris))[:10]}")
    wrong = [(n, v) for (n, v), s in lock.items() if sums.get(f"{n}-{v}") != s]
    assert not wrong, f"checksums differ from Cargo.lock for {wrong[:10]} ({rerun})"
    assert len(sums) == len(lock)
    p = subprocess.run([str(YOCTO / "scripts/update-crates"), "--check"], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, f"yocto/scripts/update-crates --check:\n{p.stdout}{p.stderr}"
    print(f"{len(lock)} crates, versions and checksums as in Cargo.lock")


def test_build_dependencies_follow_the_crates_that_need_them():
    names = {n for n, _ in cargo_lock_crates()}
    deps = set(re.findall(r'DEPENDS \+= "([^"]+)"', BUILD_DEPS_INC.read_text()))
    rerun = "run yocto/scripts/update-crates"
    assert ("clang-native" in deps) == ("bindgen" in names), \
        f"bindgen in Cargo.lock: {'bindgen' in names}, clang-native in the recipe: {'clang-native' in deps} ({rerun})"
    assert ("v4l-utils" in deps) == ("v4l" in names), \
        f"v4l in Cargo.lock: {'v4l' in names}, v4l-utils in the recipe: {'v4l-utils' in deps} ({rerun})"


def recipe_var(text: str, name: str) -> str:
    m = re.search(rf'^{re.escape(name)} \??\??= "([^"]*)"', text, re.M)
    assert m, f"{name} not set"
    return m.group(1)


def test_the_licence_checksum_matches_the_lines_it_names():
    text = PINHOLE_RECIPE.read_text()
    m = re.search(r'file://([^;]+);beginline=(\d+);endline=(\d+);md5=([0-9a-f]{32})', text)
    assert m, "LIC_FILES_CHKSUM with beginline/endline/md5 expected"
    path, begin, end, md5 = m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)
    lines = (REPO / path).read_text().splitlines(keepends=True)[begin - 1:end]
    assert hashlib.md5("".join(lines).encode()).hexdigest() == md5, \
        f"{path} lines {begin}-{end} changed ({''.join(lines).strip()!r}): update LIC_FILES_CHKSUM in {PINHOLE_RECIPE.name}"
    assert "MIT OR Apache-2.0" in "".join(lines) and recipe_var(text, "LICENSE") == "MIT | Apache-2.0"


def installed_from_repo(text: str) -> list[str]:
    """Repository paths a recipe installs: `${S}/PATH` in its install lines."""
    paths = []
    for line in re.findall(r"^\s*install -m \d+ (.*)$", text, re.M):
        paths += re.findall(r"\$\{S\}/(\S+)", line)
    return paths


def test_the_units_the_recipes_install_are_the_files_in_systemd():
    text = PINHOLE_RECIPE.read_text()
    paths = installed_from_repo(text)
    assert paths, "the pinhole recipe installs nothing from the repository"
    for p in paths:
        if "${PINHOLE_BOARD}" not in p:
            assert (REPO / p).is_file(), f"{PINHOLE_RECIPE.name} installs {p}, which the repository lacks"
    units = sorted(f.name for f in (REPO / "systemd").iterdir()
                   if f.suffix in (".service", ".conf") and f.is_file())
    assert sorted(Path(p).name for p in paths
                  if p.startswith("systemd/") and p.endswith((".service", ".conf"))) == units, \
        f"systemd/ has {units}; the recipe installs {paths}"
    # The layer carries no copy of a unit from systemd/: only drop-ins and units of its own.
    for f in LAYER.rglob("*"):
        if f.is_file() and f.suffix in (".service", ".socket", ".mount", ".timer") \
                and not f.parent.name.endswith(".d"):
            assert f.name not in units, f"{f.relative_to(REPO)} copies systemd/{f.name}: use a drop-in"
            for u in units:
                assert f.read_text() != (REPO / "systemd" / u).read_text(), f"{f} is a copy of {u}"
    print(f"installed from systemd/: {units}")


def machine_boards() -> dict[str, str]:
    text = PINHOLE_RECIPE.read_text()
    return dict(re.findall(r'^PINHOLE_BOARD:([\w-]+) = "([\w-]+)"', text, re.M))


def test_each_machine_default_configuration_passes_pinhole_check():
    boards = machine_boards()
    assert sorted(boards) == sorted(BOARD_KAS), f"PINHOLE_BOARD for {sorted(boards)}, kas machines {BOARD_KAS}"
    # The recipe builds without the gstreamer feature (PACKAGECONFIG off): no gst: default.
    assert re.search(r'^PACKAGECONFIG \?\?= ""$', PINHOLE_RECIPE.read_text(), re.M)
    for machine, board in boards.items():
        config = REPO / "board" / board / "pinhole.toml"
        assert config.is_file(), f"{machine}: {config} is missing"
        source = tomllib.loads(config.read_text()).get("source", "")
        assert not source.startswith("gst:"), \
            f"{machine}: {config.relative_to(REPO)} needs the gstreamer PACKAGECONFIG, which is off"
        binary = pinhole_bin()
        p = subprocess.run([binary, "--config", str(config), "--check"], capture_output=True,
                           text=True, timeout=15)
        assert p.returncode == 0 and "configuration OK" in p.stdout, \
            f"{machine} ({config.relative_to(REPO)}): {p.returncode} {p.stdout}{p.stderr}"


# ---------------------------------------------------------------- bitbake


def test_the_whole_stack_parses_with_bitbake():
    layers = os.environ.get("PINHOLE_YOCTO_LAYERS")
    if not layers:
        pytest.skip("SKIPPED: `bitbake -p` of the whole stack needs local checkouts of the pinned "
                    "layers; set PINHOLE_YOCTO_LAYERS=DIR (one checkout per kas repository name, "
                    "see yocto/scripts/parse-stack --help). Everything else here ran.")
    machines = os.environ.get("PINHOLE_YOCTO_MACHINES", " ".join(BOARD_KAS)).split()
    env = dict(os.environ, KAS=venv_tool("kas"))
    p = subprocess.run([str(YOCTO / "scripts/parse-stack"), *machines], env=env,
                       capture_output=True, text=True, timeout=1800)
    tail = (p.stdout + p.stderr)[-6000:]
    assert p.returncode == 0, f"parse-stack failed:\n{tail}"
    build = Path(os.environ.get("PINHOLE_YOCTO_BUILD") or REPO / "target/yocto")
    lock = cargo_lock_crates()
    for m in machines:
        image = (build / "env" / f"{m}-pinhole-image.env").read_text()
        pinhole = (build / "env" / f"{m}-pinhole.env").read_text()
        src_uri = re.search(r'^SRC_URI="(.*)"$', pinhole, re.M).group(1)
        assert len(re.findall(r"crate://crates\.io/", src_uri)) == len(lock), "crates in SRC_URI"
        assert re.search(r'^SYSTEMD_SERVICE:pinhole="pinhole.service"$', pinhole, re.M)
        assert re.search(r'^PINHOLE_BOARD="[\w-]+"$', pinhole, re.M)
        install = re.search(r'^IMAGE_INSTALL="(.*)"$', image, re.M).group(1).split()
        assert {"pinhole", "pinhole-appliance", "pinhole-cloudflared"} <= set(install), install
        features = re.search(r'^IMAGE_FEATURES="(.*)"$', image, re.M).group(1).split()
        # Read-only on the Pis; writable on the Jetson, whose flash layout has no /data (README).
        assert ("read-only-rootfs" in features) == m.startswith("raspberrypi"), (m, features)
        assert "packagegroup-base-extended" in install, install
        if m.startswith("raspberrypi"):
            assert re.search(r'^WKS_FILE="pinhole-sdimage-dual-raspberrypi.wks.in"$', image, re.M)
            assert {"rauc", "pinhole-ota"} <= set(install), install
            # The boot script rpi-u-boot-scr unpacks is this layer's (the one the SD-card twin
            # boots), not meta-rauc-raspberrypi's: the first FILESPATH directory that has a
            # boot.cmd.in, as bitbake's fetcher searches it.
            scr = (build / "env" / f"{m}-rpi-u-boot-scr.env").read_text()
            filespath = re.search(r'^FILESPATH="(.*)"$', scr, re.M).group(1).split(":")
            first = next((d for d in filespath if (Path(d) / "boot.cmd.in").is_file()), None)
            assert first and Path(first).resolve() == (LAYER / "dynamic-layers/rauc-raspberrypi/recipes-bsp/"
                                                       "rpi-u-boot-scr/files").resolve(), (m, first)
    print(tail[-1500:])
    # What a build would do with what was parsed: yocto/scripts/check-layer (its --help lists
    # the checks; tests/README.md says which defect each one found on the commit before its fix).
    p = subprocess.run([sys.executable, str(YOCTO / "scripts/check-layer"), "--layers", layers,
                        "--env-dir", str(build / "env"), *machines], capture_output=True, text=True, timeout=900)
    print(p.stdout[-8000:], p.stderr[-3000:])
    assert p.returncode == 0, f"check-layer found faults:\n{p.stdout[-6000:]}{p.stderr[-2000:]}"
    for m in machines:
        assert f"check-layer: {m}: machine-extras: ok" in p.stdout, p.stdout
        assert f"check-layer: {m}: board-programs: ok" in p.stdout, p.stdout
        assert f"check-layer: {m}: install:pinhole: ok" in p.stdout, p.stdout
        if m.startswith("raspberrypi"):
            for check in ("camera", "rauc-keyring", "slot-size", "install:pinhole-ota", "install:rauc-conf"):
                assert f"check-layer: {m}: {check}: ok" in p.stdout, (check, p.stdout)


# ---------------------------------------------------------------- without the layers


def device_script_keyring(root: Path) -> str:
    """What ota/pinhole-ota's device script reads as the camera's keyring, run against a tree
    (its absolute /etc/rauc, /run/rauc and /usr/lib/rauc moved under ROOT)."""
    src = (REPO / "ota/pinhole-ota").read_text()
    m = re.search(r'DEVICE_SCRIPT = r"""(.*?)echo "@@ rauc"', src, re.S)
    assert m, "ota/pinhole-ota has no DEVICE_SCRIPT"
    script = re.sub(r"(?<![\w.])/(etc|run|usr/lib)/rauc", lambda x: f"{root}/{x.group(1)}/rauc", m.group(1))
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True).stdout
    return out.split("@@ keyring", 1)[-1].strip()


def test_pinhole_ota_reads_the_keyring_where_rauc_1_15_finds_it(tmp_path):
    """The image installs system.conf and the keyring in /usr/lib/rauc (meta-rauc's rauc-conf at
    the locked commit, recipes-core/rauc/rauc-conf.bb: ${nonarch_libdir}/rauc). RAUC 1.15 takes
    the first of /etc, /run, /usr/lib/rauc/system.conf (rauc v1.15.2 src/context.c,
    search_paths) and reads a relative keyring path beside that file (src/utils.c,
    resolve_path). On the commit before the fix the layer's system.conf named
    /etc/rauc/ca.cert.pem and pinhole-ota read only /etc/rauc/system.conf: both missed it."""
    conf = (LAYER / "dynamic-layers/rauc/recipes-core/rauc/files/system.conf").read_text()
    path = re.search(r"^\[keyring\][^\[]*?^path\s*=\s*(\S+)", conf, re.M | re.S).group(1)
    assert not path.startswith("/"), f"system.conf's keyring path {path} is absolute: on the image it is beside system.conf"
    lib = tmp_path / "usr/lib/rauc"
    lib.mkdir(parents=True)
    (lib / "system.conf").write_text(conf)
    cert = "-----BEGIN CERTIFICATE-----\nstand-in CA for this test\n-----END CERTIFICATE-----"
    (lib / path).write_text(cert + "\n")
    assert device_script_keyring(tmp_path) == cert
    # /etc wins when it exists (RAUC's order), as a developer's override would.
    (tmp_path / "etc/rauc").mkdir(parents=True)
    (tmp_path / "etc/rauc/system.conf").write_text("[keyring]\npath=/nonexistent.pem\n")
    assert device_script_keyring(tmp_path) == ""


def test_the_root_slots_have_a_fixed_size_and_the_build_a_maximum():
    """meta-rauc-raspberrypi's .wks sizes each root slot to the root file system of the build
    that made the card: a later release a little bigger cannot be installed. The layer's own
    .wks (same partitions and labels) fixes both slots, and IMAGE_ROOTFS_MAXSIZE stops a build
    that outgrows them (image.bbclass). check-layer's slot-size check reads the .wks the parsed
    image really uses; this one reads the layer's files without the layers."""
    image = (LAYER / "recipes-pinhole/images/pinhole-image.bb").read_text()
    wks_name = re.search(r'^WKS_FILE:rpi = "([^"]+)"', image, re.M).group(1)
    wks = LAYER / "files/wic" / wks_name
    assert wks.is_file(), f"WKS_FILE {wks_name} is not the layer's own (files/wic/)"
    sizes = {m.group(1): int(m.group(2)) for m in re.finditer(
        r"--label (rootfs_[AB])\b.*--fixed-size (\d+)M", wks.read_text())}
    assert set(sizes) == {"rootfs_A", "rootfs_B"} and len(set(sizes.values())) == 1, sizes
    maxsize = int(re.search(r'^IMAGE_ROOTFS_MAXSIZE:rpi = "(\d+)"', image, re.M).group(1))
    assert 0 < maxsize <= sizes["rootfs_A"] * 1024, (maxsize, sizes)


def test_check_layer_reads_bitbake_e_output_as_bitbake_writes_it(tmp_path):
    """check-layer's reader of `bitbake -e` (bb/data.py emit_var: escaped quotes, backquotes and
    dollars, a newline as ` \\` and a new line; shell functions as NAME() { … })."""
    import importlib.machinery
    import importlib.util
    loader = importlib.machinery.SourceFileLoader("check_layer", str(YOCTO / "scripts/check-layer"))
    spec = importlib.util.spec_from_loader("check_layer", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    dump = tmp_path / "x.env"
    dump.write_text('#\n# $A\nA="one \\"two\\" \\$x \\`y\\`"\nexport B="line1 \\\nline2"\n'
                    '# line: 1, file: f\ndo_install() {\n\tinstall -d ${D}\n}\nC="" \n')
    env = mod.Env(dump)
    assert env.get("A") == 'one "two" $x `y`', env.vars
    assert env.get("B") == "line1\nline2", env.vars
    assert env.funcs["do_install"] == "\tinstall -d ${D}", env.funcs
    p = subprocess.run([sys.executable, str(YOCTO / "scripts/check-layer"), "--help"], capture_output=True, text=True)
    assert p.returncode == 0 and "installed-vs-shipped" in p.stdout and "slot-size" in p.stdout, p.stdout
