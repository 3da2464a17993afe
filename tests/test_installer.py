"""The dependency installer: QGIS's own Python on every platform's layout, every version pinned,
and pip's failures in one sentence. No QGIS needed: the layouts are faked."""

import subprocess
import sys
from pathlib import Path

import pytest

from sial_qgis_plugin.installer import (
    CONSTRAINTS,
    InterpreterNotFound,
    explain_failure,
    find_python,
    install_command,
)
from tests.helpers import REPO

LAYOUTS = {
    # name: (executable, prefix, exec_prefix, base_prefix, platform, version, files on disk, expected)
    "debian": (
        "/usr/bin/qgis", "/usr", "/usr", "/usr", "linux", (3, 11),
        {"/usr/bin/qgis", "/usr/bin/python3.11", "/usr/bin/python3"}, "/usr/bin/python3.11",
    ),
    "conda": (
        "/opt/conda/envs/gis/bin/qgis", "/opt/conda/envs/gis", "/opt/conda/envs/gis", "/opt/conda/envs/gis",
        "linux", (3, 12), {"/opt/conda/envs/gis/bin/python3"}, "/opt/conda/envs/gis/bin/python3",
    ),
    "osgeo4w": (
        r"C:\OSGeo4W\bin\qgis-bin.exe", r"C:\OSGeo4W\apps\Python312", r"C:\OSGeo4W\apps\Python312",
        r"C:\OSGeo4W\apps\Python312", "win32", (3, 12),
        {r"C:\OSGeo4W\bin\python-qgis.bat", r"C:\OSGeo4W\bin\python3.exe",
         r"C:\OSGeo4W\apps\Python312\python.exe"},
        r"C:\OSGeo4W\apps\Python312\python.exe",
    ),
    "osgeo4w-prefix-unknown": (  # QGIS's sys.prefix empty: found from qgis-bin.exe's folder
        r"C:\OSGeo4W\bin\qgis-ltr-bin.exe", "", "", "", "win32", (3, 12),
        {r"C:\OSGeo4W\bin\python-qgis-ltr.bat", r"C:\OSGeo4W\apps\Python312\python.exe"},
        r"C:\OSGeo4W\apps\Python312\python.exe",
    ),
    "windows-standalone": (
        r"C:\Program Files\QGIS 3.40.4\bin\qgis-bin.exe", r"C:\PROGRA~1\QGIS34~1.4\apps\Python312",
        r"C:\PROGRA~1\QGIS34~1.4\apps\Python312", r"C:\PROGRA~1\QGIS34~1.4\apps\Python312", "win32", (3, 12),
        {r"C:\PROGRA~1\QGIS34~1.4\apps\Python312\python.exe",
         r"C:\Program Files\QGIS 3.40.4\bin\python3.dll"},
        r"C:\PROGRA~1\QGIS34~1.4\apps\Python312\python.exe",
    ),
    "macos": (
        "/Applications/QGIS.app/Contents/MacOS/QGIS",
        "/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.12",
        "/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.12",
        "/Applications/QGIS.app/Contents/Frameworks/Python.framework/Versions/3.12", "darwin", (3, 12),
        {"/Applications/QGIS.app/Contents/MacOS/bin/python3", "/usr/bin/python3"},
        "/Applications/QGIS.app/Contents/MacOS/bin/python3",
    ),
    "venv": (  # the project's .venv, as the tests run: sys.executable is a Python
        "/work/.venv/bin/python", "/work/.venv", "/work/.venv", "/usr", "linux", (3, 11),
        {"/work/.venv/bin/python", "/usr/bin/python3.11"}, "/work/.venv/bin/python",
    ),
}  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
def test_qgis_own_python_is_found_in_each_layout(layout):
    executable, prefix, exec_prefix, base_prefix, platform, version, files, expected = LAYOUTS[layout]
    chosen = find_python(
        executable, prefix, exec_prefix, base_prefix, platform, version, exists=files.__contains__
    )
    assert chosen == expected


def test_the_path_s_python3_is_never_taken_silently():
    """A QGIS whose Python is not where its layout puts it: one clear error, not /usr/bin/python3."""
    with pytest.raises(InterpreterNotFound) as raised:
        find_python("/opt/qgis/bin/qgis", "/opt/qgis", "/opt/qgis", "/opt/qgis", "linux", (3, 12),
                    exists={"/usr/bin/python3", "/usr/local/bin/python3"}.__contains__)  # fmt: skip
    message = str(raised.value)
    assert "/opt/qgis/bin/python3.12" in message and "/usr/bin/python3," not in message
    assert "Install the packages yourself with the Python that QGIS runs" in message


def test_this_interpreter_is_found_as_it_is():
    assert Path(find_python()).resolve() == Path(sys.executable).resolve()


def test_every_package_is_installed_at_its_tested_version():
    command = install_command("/usr/bin/python3.11", ["torch", "rasterio"], Path("/t"), "cpu", "1.24.2")
    assert command[:4] == ["/usr/bin/python3.11", "-m", "pip", "install"]
    assert command[command.index("--constraint") + 1] == str(CONSTRAINTS) and CONSTRAINTS.is_file()
    assert command[-3:] == ["torch", "rasterio", "numpy==1.24.2"]
    assert "--index-url" in command and "https://download.pytorch.org/whl/cpu" in command
    assert "--index-url" not in install_command("python", ["torch"], Path("/t"), "cuda", "1.24.2")
    pins = {line.split("==")[0]: line for line in CONSTRAINTS.read_text().splitlines() if "==" in line}
    for requirement in ("torch", "torchvision", "segmentation-models-pytorch", "safetensors", "timm"):
        assert requirement in pins, requirement
    requirements = (REPO / "requirements.txt").read_text().splitlines()
    for line in requirements:
        if "==" in line and line.split("==")[0] in pins:
            assert pins[line.split("==")[0]] == line.strip(), "requirements.txt and the constraints disagree"
    assert not [line for line in CONSTRAINTS.read_text().splitlines() if line.startswith("numpy")]  # QGIS's


def test_the_development_environment_is_installed_under_the_lock():
    # Else a release on the registry (filelock 4.3.2 once) puts .venv out of step with the file.
    script = (REPO / "dev.sh").read_text()
    assert "LOCK=requirements.lock " in script
    pinned = (REPO / "requirements.lock").read_text().splitlines()
    lock = dict(line.split("==") for line in pinned if "==" in line)
    for line in CONSTRAINTS.read_text().splitlines():
        if "==" in line and not line.startswith("#"):  # the plugin installs what the tests ran with
            name, version = line.split("==")
            assert lock[name] == version, name
    installs = [line for line in script.splitlines() if "pip install" in line and "requirements.txt" in line]
    assert installs and all('-c "$LOCK"' in line for line in installs)
    assert 'cat requirements.txt "$LOCK" | sha256sum' in script  # a new lock reinstalls


def test_the_constraints_are_in_step_with_the_tested_environment():
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "constraints.py"), "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    ("output", "code", "expected"),
    [
        ("ERROR: Could not find a version that satisfies the requirement torch==2.14.1 (from versions: "
         "none)\nERROR: No matching distribution found for torch==2.14.1", 1,
         "pip found no torch for this QGIS's Python"),
        ("WARNING: Retrying (Retry(total=4...)) after connection broken by 'NewConnectionError(...)'", 1,
         "pip could not reach the package index"),
        ("OSError: [Errno 28] No space left on device", 1, "The disk is full"),
        ("ERROR: Could not install packages due to an OSError: [Errno 13] Permission denied: '/t/torch'", 1,
         "is not writable for you"),
        ("/usr/bin/python3.11: No module named pip", 1, "has no pip"),
        ("", -1, "QGIS's Python could not be started"),
        ("something else entirely", 3, "pip stopped with exit status 3"),
    ],
)  # fmt: skip
def test_a_failed_pip_is_said_in_one_sentence(output, code, expected):
    sentence = explain_failure(output, code, "/usr/bin/python3.11", Path("/t"))
    assert expected in sentence and "\n" not in sentence


def test_every_package_the_engine_imports_is_one_the_plugin_installs():
    """A QGIS without scikit-image failed a default Retrain (the superpixels) until it was here."""
    import ast

    from sial_qgis_plugin.environment import REQUIRED
    from tools.constraints import ROOTS

    given = {"numpy", "osgeo", "affine"}  # QGIS's own, and rasterio's
    command_line_only = {"matplotlib", "distributed", "psutil"}  # plots and predict-many's cluster
    imported: dict[str, str] = {}
    for path in sorted((REPO / "backend").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                imported.setdefault(name.split(".")[0], str(path.relative_to(REPO)))
    third_party = {k: v for k, v in imported.items() if k not in sys.stdlib_module_names and k != "backend"}
    missing = {k: v for k, v in third_party.items() if k not in set(REQUIRED) | given | command_line_only}
    assert not missing, f"imported by the engine, not installed by the plugin: {missing}"
    assert {"skimage", "scipy", "torch"} <= set(third_party)  # the scan sees lazy imports too
    assert set(ROOTS) == set(REQUIRED.values())  # the constraints cover what the plugin installs
