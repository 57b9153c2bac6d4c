"""Minimal Debian roots with a real Blender, Xvfb and xdotool, for the GUI test tier (run as root).

Debian's stable suite carries Blender 4.3, the unstable one the current LTS; each root is built once with
``debootstrap --variant=minbase`` and cached under ``.cache/gui-roots/<suite>``. A session bind-mounts
/proc, /dev and /sys, this checkout and the Python installation the project's venv points to (all at the
same paths), so Blender inside the root starts the backend with the project's own interpreter::

    python -m devtools.gui_root build stable        # prints the root's Blender version
    python -m devtools.gui_root unmount             # every mount left under .cache/gui-roots
    python -m devtools.gui_root remove              # unmount, then delete the roots

Standard library only.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

ROOT = Path(__file__).resolve().parent.parent
ROOTS = ROOT / ".cache" / "gui-roots"
MIRROR = "http://deb.debian.org/debian"
# python3-numpy: Blender's own builds bundle numpy, Debian's only recommends it.
PACKAGES = ("blender", "python3-numpy", "xvfb", "xdotool", "imagemagick", "xauth")
SUITES = ("stable", "unstable")
STAMP = ".scene-diffusion-root"


class RootError(RuntimeError):
    """Building or entering a root failed; the message says which command and what it printed."""


def _run(command: list[str], timeout: float = 1800) -> str:
    proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RootError(f"{' '.join(command)} exited with {proc.returncode}:\n{proc.stdout[-4000:]}")
    return proc.stdout


def mounts_under(folder: Path) -> list[Path]:
    """Mount points at or below ``folder``, deepest first (the order to unmount them)."""
    found = []
    prefix = str(folder.resolve())
    with open("/proc/self/mounts", encoding="utf-8") as fh:
        for line in fh:
            point = line.split()[1].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                found.append(Path(point))
    return sorted(set(found), key=lambda p: len(p.parts), reverse=True)


def unmount_all(folder: Path = ROOTS) -> None:
    # Lazy and recursive: /dev is an rbind with submounts, and a killed Xvfb may still hold files open.
    for point in mounts_under(folder):
        subprocess.run(["umount", "-R", "-l", str(point)], check=False, capture_output=True)
    left = mounts_under(folder)
    if left:
        raise RootError(f"still mounted: {', '.join(map(str, left))}")


def python_home() -> Path:
    """The Python installation .venv was made from (``home`` in pyvenv.cfg is its bin/ folder)."""
    cfg = ROOT / ".venv" / "pyvenv.cfg"
    for line in cfg.read_text(encoding="utf-8").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "home":
            return Path(value.strip()).resolve().parent
    raise RootError(f"{cfg} names no home")


def _mount_system(root: Path) -> None:
    for name, args in (("proc", ["-t", "proc", "proc"]), ("dev", ["--rbind", "/dev"]), ("sys", ["--rbind", "/sys"])):
        target = root / name
        if not os.path.ismount(target):
            _run(["mount", *args, str(target)])
            if name != "proc":  # keep the host's mounts out of reach when the root is unmounted
                _run(["mount", "--make-rslave", str(target)])


def _bind(root: Path, source: Path) -> None:
    target = root / source.relative_to("/")
    target.mkdir(parents=True, exist_ok=True)
    if not os.path.ismount(target):
        _run(["mount", "--bind", str(source), str(target)])


def in_root(root: Path, script: str, timeout: float = 1800, env: dict[str, str] | None = None) -> str:
    """Run a bash script inside the root; its output, or RootError."""
    return _run(["chroot", str(root), "/usr/bin/env", "-i", *[f"{k}={v}" for k, v in (env or {}).items()],
                 "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "HOME=/root", "LANG=C.UTF-8",
                 "/bin/bash", "-c", script], timeout)


def build(suite: str) -> Path:
    """The root for ``suite``, built now if no finished one is cached."""
    if os.geteuid() != 0:
        raise RootError("debootstrap, chroot and mount need root: run the GUI tier as root")
    root = ROOTS / suite
    if (root / STAMP).is_file():
        return root
    if root.exists():  # an unfinished build: nothing may stay mounted inside before it is deleted
        unmount_all(root)
        shutil.rmtree(root)
    if shutil.which("debootstrap") is None:
        _run(["apt-get", "install", "-y", "-q", "debootstrap"])
    root.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _run(["debootstrap", "--variant=minbase", suite, str(root), MIRROR])
    shutil.copy("/etc/resolv.conf", root / "etc" / "resolv.conf")
    # The unstable suite's Release file is often past its Valid-Until on a snapshot mirror.
    apt = "apt-get -o Acquire::Check-Valid-Until=false"
    _mount_system(root)
    try:
        in_root(root, f"export DEBIAN_FRONTEND=noninteractive; {apt} update -q && "
                      f"{apt} install -y -q --no-install-recommends {' '.join(PACKAGES)} && apt-get clean")
        version = in_root(root, "blender --version").splitlines()[0]
    finally:
        unmount_all(root)
    (root / STAMP).write_text(f"{version}\nbuilt in {time.monotonic() - started:.0f} s\n", encoding="utf-8")
    return root


def blender_version(root: Path) -> str:
    return (root / STAMP).read_text(encoding="utf-8").splitlines()[0]


class RootSession:
    """A root with everything mounted that Blender and the backend need, and an X server on ``display``."""

    def __init__(self, root: Path, display: int = 91, screen: str = "1600x1000x24") -> None:
        self.root, self.display, self.screen = root, display, screen
        self._xvfb: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> RootSession:
        try:
            _mount_system(self.root)
            _bind(self.root, ROOT)
            _bind(self.root, python_home())
            (self.root / "tmp" / ".X11-unix").mkdir(parents=True, exist_ok=True)
            self._xvfb = subprocess.Popen(
                ["chroot", str(self.root), "Xvfb", f":{self.display}", "-screen", "0", self.screen,
                 "-nolisten", "tcp", "+extension", "GLX"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            socket = self.root / "tmp" / ".X11-unix" / f"X{self.display}"
            deadline = time.monotonic() + 30
            while not socket.exists():
                if self._xvfb.poll() is not None or time.monotonic() > deadline:
                    raise RootError(f"Xvfb :{self.display} did not start in {self.root}")
                time.sleep(0.1)
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def run(self, script: str, timeout: float = 900, env: dict[str, str] | None = None) -> str:
        return in_root(self.root, script, timeout, {"DISPLAY": f":{self.display}", **(env or {})})

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._xvfb is not None:
            self._xvfb.terminate()
            try:
                self._xvfb.wait(10)
            except subprocess.TimeoutExpired:
                self._xvfb.kill()
        unmount_all(self.root)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.gui_root", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build").add_argument("suites", nargs="*", default=list(SUITES))
    sub.add_parser("unmount")
    sub.add_parser("remove")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            for suite in args.suites:
                print(f"{suite}: {blender_version(build(suite))}")
        elif args.command == "unmount":
            unmount_all()
        else:
            unmount_all()
            shutil.rmtree(ROOTS, ignore_errors=True)
    except RootError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
