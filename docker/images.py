#!/usr/bin/env python3
"""Build Synapse's Docker images with no registry: a debootstrap base, then our wheels on top.

Usage (from the repository root; root and a running Docker engine needed)::

    python docker/images.py chaos            # synapse-chaos:<version> (what `make image` runs)
    python docker/images.py base             # the Debian base: python3, python3-venv
    python docker/images.py redis            # the base plus redis-server (the tests use it)
    python docker/images.py base --packages redis-server iproute2   # any extra Debian packages
    python docker/images.py chaos redis --json   # tags as JSON, for scripts and test fixtures

Each image is built once per machine and reused until its inputs change:

* a base image is tagged ``synapse-base:<key>``, the key a hash of the Debian suite, the mirror
  (read from this machine's apt configuration), the package list and this script's recipe;
* the chaos image is tagged ``synapse-chaos:<version>-<key>``, the key a hash of the base image,
  ``docker/Dockerfile`` and every source file that goes into the wheel; ``chaos`` also (re)tags
  it ``synapse-chaos:<version>``. Tests use the keyed tag, so work trees at different commits
  never swap each other's image mid-run.

The wheels are built on the host (``pip wheel . -w DIR``) and installed in the image with
``pip install --no-index``: nothing inside a container touches the network. Builds of the same
image by concurrent runs wait for each other (a file lock), so one builds and the others reuse.

Environment: ``SYNAPSE_DEBIAN_MIRROR`` and ``SYNAPSE_DEBIAN_SUITE`` override what apt says.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
EXTRA = {"redis": ("redis-server",)}
IMAGE_LABEL = "io.synapse.image"
# Bumped whenever the base recipe below changes in a way the key does not otherwise see.
RECIPE = "debootstrap-minbase-3"
# What goes into the wheel (and so into the chaos image); everything else is not hashed.
SOURCES = ("pyproject.toml", "README.md", "synapse_core", "chaos", "pytest_synapse")
LOCK_DIR = Path(tempfile.gettempdir())


class ImageError(RuntimeError):
    """An image could not be built; the message says what failed and what to do."""


def log(message: str) -> None:
    print(f"images: {message}", file=sys.stderr, flush=True)


def run(cmd: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, check=True, text=True, capture_output=True, **kwargs)  # type: ignore[call-overload,no-any-return]
    except FileNotFoundError:
        raise ImageError(f"{cmd[0]} is not installed (needed to build images)") from None
    except subprocess.CalledProcessError as exc:
        tail = (exc.stderr or exc.stdout or "").strip().splitlines()[-15:]
        raise ImageError(f"{' '.join(cmd[:4])}... failed:\n  " + "\n  ".join(tail)) from None


def image_exists(tag: str) -> dict[str, object] | None:
    result = subprocess.run(
        ["docker", "image", "inspect", tag], text=True, capture_output=True, check=False
    )
    if result.returncode != 0:
        return None
    info: list[dict[str, object]] = json.loads(result.stdout)
    return info[0]


def labels_of(info: dict[str, object]) -> dict[str, str]:
    config = info.get("Config") or {}
    assert isinstance(config, dict)
    return dict(config.get("Labels") or {})


@contextlib.contextmanager
def build_lock(name: str) -> Iterator[None]:
    """Serialise builds of one image across processes (other work trees, CI, xdist workers)."""
    path = LOCK_DIR / f"synapse-image-{name}.lock"
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:12]


# -- Debian base ----------------------------------------------------------------------------


def debian_suite() -> str:
    suite = os.environ.get("SYNAPSE_DEBIAN_SUITE", "").strip()
    if suite:
        return suite
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                return line.split("=", 1)[1].strip().strip('"')
    raise ImageError(
        "cannot tell the Debian suite from /etc/os-release; set SYNAPSE_DEBIAN_SUITE=bookworm"
    )


def debian_mirror(suite: str) -> str:
    """The mirror apt uses for *suite*/main on this machine (never a hard-coded host)."""
    mirror = os.environ.get("SYNAPSE_DEBIAN_MIRROR", "").strip()
    if mirror:
        return mirror
    try:
        out = run(
            [
                "apt-get",
                "indextargets",
                "--format",
                "$(SITE) $(RELEASE) $(COMPONENT) $(TARGET_OF)",
            ]
        ).stdout
    except ImageError as exc:
        raise ImageError(f"cannot read apt's mirrors ({exc}); set SYNAPSE_DEBIAN_MIRROR") from None
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 4 and parts[1] == suite and parts[2] == "main" and parts[3] == "deb":
            return parts[0]
    raise ImageError(
        f"apt has no mirror for {suite}/main (run apt-get update?); set SYNAPSE_DEBIAN_MIRROR"
    )


def base_image(packages: Sequence[str] = ()) -> str:
    """Tag of the Debian base with python3 and *packages*; built if missing."""
    for package in packages:
        if not re.fullmatch(r"[a-z0-9][a-z0-9+.-]+", package):
            raise ImageError(f"{package!r} is not a Debian package name")
    include = sorted({*BASE_PACKAGES, *packages})
    suite = debian_suite()
    mirror = debian_mirror(suite)
    key = digest(RECIPE, suite, mirror, *include)
    tag = f"synapse-base:{key}"
    with build_lock(f"base-{key}"):
        if image_exists(tag):
            return tag
        if shutil.which("debootstrap") is None:
            raise ImageError(
                "debootstrap is not installed: `make system-deps` (or apt-get install "
                "debootstrap) installs it"
            )
        started = time.monotonic()
        log(f"building {tag}: debootstrap {suite} from {mirror} with {', '.join(include)}")
        with tempfile.TemporaryDirectory(prefix="synapse-rootfs-", dir="/var/tmp") as tmp:
            rootfs = Path(tmp) / "rootfs"
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    f"--include={','.join(include)}",
                    suite,
                    str(rootfs),
                    mirror,
                ]
            )
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for item in (rootfs / junk).glob("*"):
                    if item.is_file():
                        item.unlink()
            tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
            try:
                run(
                    [
                        "docker",
                        "import",
                        "--change",
                        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                        "--change",
                        'CMD ["/bin/bash"]',
                        "--message",
                        f"synapse base {suite} {' '.join(include)}",
                        "-",
                        tag,
                    ],
                    stdin=tar.stdout,
                )
            finally:
                assert tar.stdout is not None
                tar.stdout.close()
                tar.wait()
        log(f"built {tag} in {time.monotonic() - started:.1f}s")
        return tag


# -- the chaos image ------------------------------------------------------------------------


def version() -> str:
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE)
    if match is None:
        raise ImageError("no version in pyproject.toml")
    return match.group(1)


def source_files() -> list[Path]:
    files: list[Path] = []
    for name in SOURCES:
        path = ROOT / name
        if path.is_file():
            files.append(path)
            continue
        files.extend(
            p
            for p in sorted(path.rglob("*"))
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        )
    return files


def chaos_image(*, base: str | None = None, retag: bool = True) -> str:
    """Tag of the chaos server image for the current sources; built if missing."""
    base = base or base_image()
    base_info = image_exists(base)
    if base_info is None:
        raise ImageError(f"base image {base} does not exist")
    hasher = hashlib.sha256(str(base_info["Id"]).encode())
    for path in [DOCKERFILE, *source_files()]:
        hasher.update(str(path.relative_to(ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    key = hasher.hexdigest()[:12]
    plain = f"synapse-chaos:{version()}"
    tag = f"{plain}-{key}"
    with build_lock(f"chaos-{key}"):
        if image_exists(tag) is None:
            started = time.monotonic()
            log(f"building {tag} on {base}")
            with tempfile.TemporaryDirectory(prefix="synapse-context-") as tmp:
                context = Path(tmp)
                for name in SOURCES:
                    source = ROOT / name
                    if source.is_file():
                        shutil.copy2(source, context / name)
                    else:
                        shutil.copytree(
                            source, context / name, ignore=shutil.ignore_patterns("__pycache__")
                        )
                (context / "docker").mkdir()
                shutil.copy2(DOCKERFILE, context / "docker" / "Dockerfile")
                wheels = context / "docker" / "wheels"
                wheels.mkdir()
                log("building wheels on the host (pip wheel)")
                run(
                    [
                        sys.executable,
                        "-m",
                        "pip",
                        "wheel",
                        "--quiet",
                        "-w",
                        str(wheels),
                        str(context),
                    ]
                )
                run(
                    [
                        "docker",
                        "build",
                        "--quiet",
                        "--build-arg",
                        f"BASE_IMAGE={base}",
                        "--label",
                        f"{IMAGE_LABEL}=chaos",
                        "--label",
                        f"io.synapse.inputs={key}",
                        "-t",
                        tag,
                        "-f",
                        str(context / "docker" / "Dockerfile"),
                        str(context),
                    ],
                    env={**os.environ, "DOCKER_BUILDKIT": "0"},
                )
            log(f"built {tag} in {time.monotonic() - started:.1f}s")
        if retag:
            run(["docker", "tag", tag, plain])
    return tag


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("images", nargs="+", choices=["base", "chaos", "redis"])
    parser.add_argument("--packages", nargs="*", default=[], help="extra Debian packages (base)")
    parser.add_argument("--json", action="store_true", help="print {image: tag} as JSON")
    args = parser.parse_args(argv)
    tags: dict[str, str] = {}
    try:
        for name in args.images:
            if name == "base":
                tags[name] = base_image(args.packages)
            elif name == "chaos":
                tags[name] = chaos_image()
            else:
                tags[name] = base_image(EXTRA[name])
    except ImageError as exc:
        print(f"images: error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(tags))
    else:
        for tag in tags.values():
            print(tag)
    return 0


if __name__ == "__main__":
    sys.exit(main())
