"""Starting the real QGIS desktop with the packaged plugin in a throwaway profile.

Used by ``./dev.sh qgis`` (an analyst's start, with the example scene loaded) and by the
end-to-end test (a scripted session under Xvfb). QGIS runs Debian's Python; the packages the
engine needs come from the project's .venv through PYTHONPATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from package import PLUGIN, REPOSITORY, build

sys.path.insert(0, str(REPOSITORY))

QGIS_SETTINGS = """[PythonPlugins]
{plugin}=true
grassprovider=false
sagaprovider=false
otbprovider=false

[qgis]
checkVersion=false
showTips=false
showTips322=false
newProjectDefault=false

[migration]
fileVersion=2
settings=true

[UI]
UI/hidebrowser=true
"""


def make_profile(root: Path, plugin_zip: Path | None = None) -> Path:
    """A fresh profile folder with the plugin installed and enabled; returns the profiles path.

    QGIS's GRASS, SAGA and OTB providers are switched off: without those programs installed they
    fail to load with a modal error dialog that would block a scripted session."""
    shutil.rmtree(root, ignore_errors=True)
    profile = root / "profiles" / "default"
    plugins = profile / "python" / "plugins"
    plugins.mkdir(parents=True)
    with zipfile.ZipFile(plugin_zip or build(root / "dist")) as archive:
        archive.extractall(plugins)
    settings = profile / "QGIS" / "QGIS3.ini"
    settings.parent.mkdir(parents=True)
    settings.write_text(QGIS_SETTINGS.format(plugin=PLUGIN))
    return root


def environment() -> dict[str, str]:
    """QGIS's environment: the venv's packages on PYTHONPATH (QGIS itself runs Debian's Python)."""
    site = sysconfig.get_paths()["purelib"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH", "")) if p)
    env.pop("QT_QPA_PLATFORM", None)
    return env


def command(profiles: Path, *arguments: str) -> list[str]:
    return ["qgis", "--profiles-path", str(profiles), "--nologo", "--noversioncheck", *arguments]


def start_desktop() -> int:
    """``./dev.sh qgis``: QGIS with the plugin enabled and the example scene open."""
    from backend.demo.scene import write_scene

    if not os.environ.get("DISPLAY"):
        print(
            "error: no display (DISPLAY is unset): run this on a desktop, or under xvfb-run", file=sys.stderr
        )
        return 2
    scene_dir = REPOSITORY / "demo_output" / "scene"
    image = scene_dir / "sample_image.tif"
    if not image.exists():
        write_scene(scene_dir)
    profiles = make_profile(REPOSITORY / "build" / "qgis-profile")
    print(f"QGIS with the plugin from a throwaway profile in {profiles}; example scene: {image}")
    return subprocess.call(command(profiles, str(image)), env=environment())


if __name__ == "__main__":
    sys.exit(start_desktop())
