"""Build the sample service's container image without a registry.

The image is FROM scratch and holds Debian's statically linked busybox (busybox-static) plus the
shell scripts next to this file: `busybox nc -ll` accepts connections and runs a tiny CGI host that
answers /health, /work, /fault and /stats like the Python sample service does. The build context is
assembled in memory (a tar), so nothing is written into the source tree and nothing is pulled.
"""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BUSYBOX_CANDIDATES = ("/bin/busybox", "/usr/bin/busybox")
# Applets the scripts call by name (PATH=/bin in the image); each is a symlink to busybox.
APPLETS = ("sh", "cat", "sed", "awk", "tr", "sleep", "head", "tail", "kill", "nc", "echo", "printf", "wget",
           "ls", "ps")


class ImageBuildError(Exception):
    pass


def find_busybox() -> Path:
    for candidate in BUSYBOX_CANDIDATES:
        path = Path(candidate)
        # A dynamically linked busybox would not run in an image that has no libc.
        if path.is_file() and _is_static(path):
            return path
    raise ImageBuildError("no statically linked busybox found: apt-get install busybox-static")


def _is_static(path: Path) -> bool:
    # Only a dynamically linked executable names its loader (PT_INTERP) near the ELF header.
    head = path.read_bytes()[:8192]
    return b"ld-linux" not in head and b"ld-musl" not in head


def build_context(busybox: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(HERE / "Dockerfile", arcname="Dockerfile")
        for root, _dirs, files in os.walk(HERE / "rootfs"):
            for name in sorted(files):
                path = Path(root) / name
                info = tar.gettarinfo(str(path), arcname=f"rootfs/{path.relative_to(HERE / 'rootfs')}")
                info.mode = 0o755
                info.uid = info.gid = 0
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
        info = tar.gettarinfo(str(busybox), arcname="rootfs/bin/busybox")
        info.mode, info.uid, info.gid = 0o755, 0, 0
        with busybox.open("rb") as handle:
            tar.addfile(info, handle)
        for applet in APPLETS:
            link = tarfile.TarInfo(f"rootfs/bin/{applet}")
            link.type, link.linkname, link.mode = tarfile.SYMTYPE, "busybox", 0o777
            tar.addfile(link)
        tmp = tarfile.TarInfo("rootfs/tmp")
        tmp.type, tmp.mode = tarfile.DIRTYPE, 0o1777
        tar.addfile(tmp)
    return buf.getvalue()


def build_sample_image(tag: str, *, client=None) -> str:  # type: ignore[no-untyped-def]
    """Build (or rebuild; layers are cached) the image and tag it. Returns the image id."""
    import docker
    from docker.errors import BuildError, DockerException

    try:
        client = client or docker.from_env(timeout=120)
        context = io.BytesIO(build_context(find_busybox()))
        image, _logs = client.images.build(fileobj=context, custom_context=True, tag=tag, rm=True, forcerm=True,
                                           pull=False, labels={"hmsmgmt.sample": "true"})
    except BuildError as exc:
        raise ImageBuildError(f"build failed: {exc}") from exc
    except DockerException as exc:
        raise ImageBuildError(f"Docker engine unreachable or refused the build: {exc}") from exc
    return image.id


def image_exists(tag: str, *, client=None) -> bool:  # type: ignore[no-untyped-def]
    import docker
    from docker.errors import ImageNotFound

    client = client or docker.from_env(timeout=10)
    try:
        client.images.get(tag)
    except ImageNotFound:
        return False
    return True
