"""How the engine's packages are installed into QGIS's own Python (no Qt here: unit-tested).

**Which Python.** Inside QGIS, ``sys.executable`` is usually QGIS itself (``qgis-bin.exe``,
``QGIS.app/Contents/MacOS/QGIS``, ``/usr/bin/qgis``), not a Python. The interpreter is found
from QGIS's own ``sys`` (its executable, ``prefix``, ``exec_prefix``, ``base_prefix``) in the
layouts QGIS ships:

- Linux distributions and conda: ``<prefix>/bin/python3.X``;
- Windows, OSGeo4W (``C:\\OSGeo4W\\bin\\qgis-bin.exe``) and the standalone installer
  (``C:\\Program Files\\QGIS 3.40\\bin\\qgis-bin.exe``): ``<prefix>\\python.exe``, that is
  ``…\\apps\\Python312\\python.exe`` (``python-qgis.bat`` only sets up the same environment,
  which QGIS's own process already has);
- macOS (``/Applications/QGIS.app/Contents/MacOS/QGIS``): ``…/Contents/MacOS/bin/python3``.

It never falls back to whatever ``python3`` is on the PATH: packages installed for another
Python would not load in QGIS. When none is found, :class:`InterpreterNotFound` says where it
looked and what to run by hand.

**Which versions.** pip gets the plugin's ``constraints.txt`` (tools/constraints.py writes it
from the tested environment: every package, the transitive ones included) and QGIS's numpy,
pinned. **When pip fails**, :func:`explain_failure` turns its output into one sentence.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

PLUGIN_DIR = Path(__file__).resolve().parent
CONSTRAINTS = PLUGIN_DIR / "constraints.txt"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PYPI = "https://pypi.org/simple"


class InterpreterNotFound(Exception):
    """QGIS's Python interpreter is not where QGIS's layouts put it."""

    def __init__(self, looked: Sequence[str]):
        self.looked = list(looked)
        super().__init__(
            "QGIS's Python interpreter was not found (looked for " + ", ".join(self.looked) + "). "
            "Install the packages yourself with the Python that QGIS runs (on Windows, in the "
            "OSGeo4W shell: python -m pip install …)."
        )


def interpreter_candidates(
    executable: str, prefix: str, exec_prefix: str, base_prefix: str, platform: str, version: tuple[int, int]
) -> list[PurePath]:
    """Where QGIS's Python may be, most likely first, for these values of QGIS's ``sys``."""
    windows = platform.startswith("win")
    path: type[PurePath] = PureWindowsPath if windows else PurePosixPath
    exe = path(executable) if executable else None
    prefixes = list(dict.fromkeys(p for p in (exec_prefix, prefix, base_prefix) if p))
    candidates: list[PurePath] = []
    if (
        exe is not None
        and exe.name.lower().startswith("python")
        and exe.suffix.lower() not in (".bat", ".cmd")
    ):
        candidates.append(exe)  # a plain Python (a virtual environment, a script runner)
    major, minor = version
    if windows:
        candidates += [path(p) / "python.exe" for p in prefixes]
        if exe is not None:  # …\bin\qgis-bin.exe → …\apps\PythonXY\python.exe
            candidates.append(exe.parent.parent / "apps" / f"Python{major}{minor}" / "python.exe")
    else:
        if exe is not None and platform == "darwin":  # QGIS.app/Contents/MacOS/QGIS → MacOS/bin/python3
            candidates += [exe.parent / "bin" / f"python{major}.{minor}", exe.parent / "bin" / "python3"]
        for p in prefixes:
            candidates += [path(p) / "bin" / f"python{major}.{minor}", path(p) / "bin" / "python3"]
    return list(dict.fromkeys(candidates))


def find_python(
    executable: str | None = None,
    prefix: str | None = None,
    exec_prefix: str | None = None,
    base_prefix: str | None = None,
    platform: str | None = None,
    version: tuple[int, int] | None = None,
    exists: Callable[[str], bool] = os.path.isfile,
) -> str:
    """QGIS's own Python interpreter (by default from this process's ``sys``)."""
    candidates = interpreter_candidates(
        sys.executable if executable is None else executable,
        sys.prefix if prefix is None else prefix,
        sys.exec_prefix if exec_prefix is None else exec_prefix,
        sys.base_prefix if base_prefix is None else base_prefix,
        sys.platform if platform is None else platform,
        tuple(sys.version_info[:2]) if version is None else version,
    )
    for candidate in candidates:
        if exists(str(candidate)):
            return str(candidate)
    raise InterpreterNotFound([str(c) for c in candidates])


def install_command(
    python: str, packages: Sequence[str], target: Path, build: str, numpy_version: str
) -> list[str]:
    """The pip command line. ``build``: "cuda" (PyPI's default torch) or "cpu" (PyTorch's CPU
    wheels). Every version comes from the constraints; QGIS's numpy is kept."""
    quiet = ["--disable-pip-version-check", "--progress-bar", "off"]
    command = [python, "-m", "pip", "install", "--target", str(target), "--upgrade", *quiet]
    command += ["--constraint", str(CONSTRAINTS)]
    if build == "cpu":
        command += ["--index-url", CPU_INDEX, "--extra-index-url", PYPI]
    return [*command, *packages, f"numpy=={numpy_version}"]


FAILURES = (
    (r"No space left on device", "The disk is full: free some space in {target}'s drive and try again."),
    (
        r"Permission denied|Access is denied",
        "{target} is not writable for you: the packages cannot go there.",
    ),
    (
        r"(Could not fetch URL|NewConnectionError|Name or service not known|Temporary failure in name "
        r"resolution|getaddrinfo failed|ConnectTimeout|ReadTimeout|ProxyError|SSLError|CERTIFICATE_VERIFY)",
        "pip could not reach the package index: check the network connection (or the proxy, pip's "
        "--proxy), then try again.",
    ),
    (
        r"No matching distribution found for (\S+)"
        r"|Could not find a version that satisfies the requirement (\S+)",
        "pip found no {package} for this QGIS's Python ({python_version}, {platform}): it may be too new "
        "(or 32-bit) for the tested versions. Install a QGIS with Python 3.10–3.13, 64-bit, or the packages "
        "yourself.",
    ),
    (
        r"No module named pip",
        "QGIS's Python ({python}) has no pip: install pip for it first (python -m ensurepip).",
    ),
    (
        r"ResolutionImpossible|conflicting dependencies",
        "pip found the tested versions conflicting with each other for this Python; see its output above.",
    ),
)


def explain_failure(output: str, code: int, python: str, target: Path) -> str:
    """One sentence on why pip failed, from its output (the first known cause wins)."""
    if code == -1:
        return f"QGIS's Python could not be started ({python}): is it still there?"
    for pattern, text in FAILURES:
        match = re.search(pattern, output)
        if match:
            package = next((g for g in match.groups() if g), "") if match.groups() else ""
            return text.format(
                target=target,
                python=python,
                package=package.split("==")[0].strip("'\"") or "package",
                python_version=f"Python {sys.version_info.major}.{sys.version_info.minor}",
                platform=sys.platform,
            )
    return f"pip stopped with exit status {code}; the reason is in its output above."
