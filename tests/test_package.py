"""The plugin zip: the engine travels as the plugin's own subpackage, and a bad zip is refused."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "tools"))
from package import PLUGIN, PackageError, build, check_layout, relative_engine_imports


@pytest.fixture(scope="module")
def plugin_zip(tmp_path_factory):
    """A zip built (and checked: its import test included) the way ``./dev.sh package`` does."""
    return build(tmp_path_factory.mktemp("dist"))


def test_the_zip_holds_the_engine_inside_the_plugin(plugin_zip):
    with zipfile.ZipFile(plugin_zip) as archive:
        names = archive.namelist()
        assert {name.split("/")[0] for name in names} == {PLUGIN}
        assert f"{PLUGIN}/metadata.txt" in names and f"{PLUGIN}/models/dubai-landcover/model.json" in names
        assert archive.read(f"{PLUGIN}/engine/__init__.py") == (REPO / "backend" / "__init__.py").read_bytes()
        assert f"{PLUGIN}/engine/cli/main.py" in names and f"{PLUGIN}/engine/session/session.py" in names
        folders = {part for name in names for part in name.split("/")[:-1]}
        assert not folders & {"backend", "experiments", "benchmarks", "tests", "__pycache__"}
        controller = archive.read(f"{PLUGIN}/lifecycle.py").decode()
        algorithms = archive.read(f"{PLUGIN}/processing/algorithms.py").decode()
    assert "        from .engine.session.session import Session\n" in controller  # a lazy import
    assert "    from ..engine.progress import Monitor\n" in algorithms
    assert "from backend" not in controller + algorithms
    assert "from backend.session.session import Session" in (REPO / PLUGIN / "lifecycle.py").read_text()


def test_the_extracted_zip_finds_its_models_and_imports_without_the_repository(plugin_zip, tmp_path):
    with zipfile.ZipFile(plugin_zip) as archive:
        archive.extractall(tmp_path)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from sial_qgis_plugin.environment import bundled_models, models_directories; "
        "import sial_qgis_plugin.engine.session.session; "
        "print([str(d) for d in models_directories()], sorted(m.name for m in bundled_models()))"
    )
    result = subprocess.run(
        [sys.executable, "-I", "-c", code, str(tmp_path)], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        == f"[{str(tmp_path / PLUGIN / 'models')!r}] ['dubai-buildings', 'dubai-landcover']"
    )


def test_imports_of_the_engine_get_as_many_dots_as_the_module_is_deep():
    source = (
        "import backend\nimport backend.io.clicks as clicks\nfrom backend import errors\n"
        "def f():\n    from backend.io.clicks import (\n        write_clicks,\n    )\n"
        "    from backendish import other\n"
    )
    assert relative_engine_imports(source, 2) == (
        "from .. import engine as backend\nfrom ..engine.io import clicks as clicks\n"
        "from ..engine import errors\n"
        "def f():\n    from ..engine.io.clicks import (\n        write_clicks,\n    )\n"
        "    from backendish import other\n"
    )
    assert relative_engine_imports("from backend.errors import UserError\n", 1) == (
        "from .engine.errors import UserError\n"
    )
    with pytest.raises(PackageError, match=r"x.py:1: write `from backend import …`"):
        relative_engine_imports("import backend.io\n", 1, "x.py")


def _doctored(plugin_zip, path, changes: dict[str, bytes | None]):
    """A copy of the zip with some members replaced, added (bytes) or removed (None)."""
    with zipfile.ZipFile(plugin_zip) as source, zipfile.ZipFile(path, "w") as target:
        for info in source.infolist():
            if info.filename not in changes and not info.filename.endswith(".safetensors"):
                target.writestr(info, source.read(info))
        for name, data in changes.items():
            if data is not None:
                target.writestr(name, data)
    return path


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"backend/__init__.py": b""}, "must hold one folder sial_qgis_plugin/ with metadata.txt"),
        ({f"{PLUGIN}/metadata.txt": None}, "must hold one folder sial_qgis_plugin/ with metadata.txt"),
        ({f"{PLUGIN}/engine/__init__.py": None}, "no sial_qgis_plugin/engine/__init__.py"),
        ({f"{PLUGIN}/engine/backend/__init__.py": b""}, "holds a folder named backend/"),
        ({f"{PLUGIN}/tests/test_x.py": b""}, "holds a folder named tests/"),
        ({f"{PLUGIN}/tasks.py": b"def run():\n    from backend.errors import UserError\n"},
         "sial_qgis_plugin/tasks.py:2: absolute import of backend"),
    ],
)  # fmt: skip
def test_a_zip_that_is_not_what_qgis_should_install_is_refused(plugin_zip, tmp_path, changes, message):
    bad = _doctored(plugin_zip, tmp_path / "bad.zip", changes)
    with zipfile.ZipFile(bad) as archive, pytest.raises(PackageError, match=message):
        check_layout(archive)


def test_the_command_says_why_in_one_error_line_and_exits_2(plugin_zip, tmp_path):
    bad = _doctored(plugin_zip, tmp_path / "bad.zip", {f"{PLUGIN}/experiments/x.py": b""})
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / "package.py"), "--check", str(bad)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"error: the zip holds a folder named experiments/: {PLUGIN}/experiments/x.py"
    ]
    good = subprocess.run(
        [sys.executable, str(REPO / "tools" / "package.py"), "--check", str(plugin_zip)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert good.returncode == 0 and good.stdout.strip() == f"{plugin_zip}: ok", good.stderr


def test_a_lazy_import_the_engine_lacks_fails_the_import_test(plugin_zip, tmp_path):
    from package import check

    tasks = b"def run():\n    from .engine.errors import NoSuchError\n"
    bad = _doctored(plugin_zip, tmp_path / "bad.zip", {f"{PLUGIN}/tasks.py": tasks})
    with pytest.raises(
        PackageError, match=r"does not import cleanly: sial_qgis_plugin/tasks.py:2: .*NoSuchError"
    ):
        check(bad)


def test_a_plugin_repository_lies_beside_the_zip(plugin_zip, tmp_path):
    """plugins.xml, as QGIS's plugin manager reads it: the plugin's id (its zip's file name up to
    the first dot), its versions, and where to download it."""
    from urllib.parse import unquote, urlparse
    from xml.etree import ElementTree

    from package import write_repository

    xml = write_repository(plugin_zip)
    assert xml == plugin_zip.parent / "plugins.xml"
    [plugin] = ElementTree.parse(xml).getroot().findall("pyqgis_plugin")
    assert plugin.get("version") == "0.1.0" and plugin.get("name") == "Interactive segmentation (SIAL)"
    assert plugin.findtext("file_name").partition(".")[0] == PLUGIN  # the folder it installs as
    assert Path(unquote(urlparse(plugin.findtext("download_url")).path)) == plugin_zip.resolve()
    assert plugin.findtext("qgis_minimum_version") == "3.40"
    assert plugin.findtext("qgis_maximum_version") == "4.99"
    assert plugin.findtext("supports_qt6") == "True" and plugin.findtext("experimental") == "True"
    hosted = write_repository(plugin_zip, "https://example.org/sial/")
    url = ElementTree.parse(hosted).getroot().find("pyqgis_plugin").findtext("download_url")
    assert url == f"https://example.org/sial/{plugin_zip.name}"
    with zipfile.ZipFile(plugin_zip) as archive:
        assert f"{PLUGIN}/constraints.txt" in archive.namelist()  # what the installer gives pip
