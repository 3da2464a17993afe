"""When torch & co. are missing: explain, and install them for this QGIS's Python on request.

Packages go to a plugin-private folder (never into QGIS's own Python), pinned to the versions
the engine is tested with. QGIS's numpy is kept as it is (its GDAL bindings are built against
it). pip runs in a separate process; its output is shown as it comes.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from qgis.PyQt.QtCore import QProcess, pyqtSignal
from qgis.PyQt.QtWidgets import (
    QButtonGroup,
    QDialog,
    QDialogButtonBox,
    QLabel,
    QPlainTextEdit,
    QProgressBar,
    QRadioButton,
    QVBoxLayout,
)

from .environment import private_packages_dir

PINNED = {
    "torch": "torch==2.14.1",
    "torchvision": "torchvision==0.29.2",
    "segmentation-models-pytorch": "segmentation-models-pytorch==0.6.0",
    "safetensors": "safetensors>=0.4",
    "rasterio": "rasterio>=1.3",
}
CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def python_executable() -> str:
    """QGIS's own Python interpreter (``sys.executable`` is the qgis binary on most platforms)."""
    if Path(sys.executable).name.lower().startswith("python"):
        return sys.executable
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    prefix = Path(sys.exec_prefix)
    for candidate in (
        prefix / "bin" / f"python{version}",
        prefix / "bin" / "python3",
        prefix / "python.exe",
        prefix / "python3.exe",
    ):
        if candidate.exists():
            return str(candidate)
    return shutil.which(f"python{version}") or shutil.which("python3") or "python3"


def install_command(packages: list[str], target: Path, build: str) -> list[str]:
    """The pip command line (``build``: "cuda", PyPI's default torch, or "cpu", PyTorch's CPU wheels)."""
    import numpy

    command = [python_executable(), "-m", "pip", "install", "--target", str(target), "--upgrade",
               "--disable-pip-version-check", "--progress-bar", "off"]  # fmt: skip
    if build == "cpu":
        command += ["--index-url", CPU_INDEX, "--extra-index-url", "https://pypi.org/simple"]
    command += [PINNED.get(p, p) for p in packages]
    command += [f"numpy=={numpy.__version__}"]  # keep QGIS's numpy
    return command


def has_nvidia_gpu() -> bool:
    return shutil.which("nvidia-smi") is not None


class DependencyDialog(QDialog):
    """Says what is missing and why; installs it with visible progress; never a traceback."""

    installed = pyqtSignal(bool)

    def __init__(self, missing: list[str], parent=None):
        super().__init__(parent)
        self.missing = missing
        self.target = private_packages_dir()
        self.process: QProcess | None = None
        self.setWindowTitle("Interactive segmentation: Python packages needed")
        self.setMinimumWidth(560)
        layout = QVBoxLayout(self)
        self.explanation = QLabel(
            "<p>The interactive segmentation plugin runs a PyTorch model inside QGIS. "
            f"These Python packages are missing: <b>{', '.join(missing)}</b>.</p>"
            f"<p>They can be installed for this QGIS only, into<br><code>{self.target}</code><br>"
            "(a few GB for the CUDA build of torch, about 200 MB for the CPU build). "
            "Nothing else in your system changes. QGIS must be restarted afterwards.</p>"
        )
        self.explanation.setWordWrap(True)
        layout.addWidget(self.explanation)
        self.cuda = QRadioButton("CUDA build (NVIDIA GPU; PyPI's standard torch)")
        self.cpu = QRadioButton("CPU-only build (smaller; no GPU)")
        (self.cuda if has_nvidia_gpu() else self.cpu).setChecked(True)
        group = QButtonGroup(self)
        for button in (self.cuda, self.cpu):
            group.addButton(button)
            layout.addWidget(button)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        layout.addWidget(self.progress)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setPlaceholderText("pip's output will appear here")
        layout.addWidget(self.log)
        self.buttons = QDialogButtonBox()
        self.install_button = self.buttons.addButton("Install", QDialogButtonBox.AcceptRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.Close)
        self.install_button.clicked.connect(self.start_install)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)

    @property
    def build(self) -> str:
        return "cpu" if self.cpu.isChecked() else "cuda"

    def command(self) -> list[str]:
        return install_command(self.missing, self.target, self.build)

    def start_install(self) -> None:
        self.target.mkdir(parents=True, exist_ok=True)
        command = self.command()
        self.log.appendPlainText("$ " + " ".join(command))
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._show_output)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(lambda _: self._finished(-1, None))
        self.install_button.setEnabled(False)
        self.progress.setRange(0, 0)  # busy: pip does not report a total
        self.process.start(command[0], command[1:])

    def _show_output(self) -> None:
        assert self.process is not None
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.log.appendPlainText(text.rstrip())

    def _finished(self, code: int, _status) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if code == 0 else 0)
        if code == 0:
            self.log.appendPlainText("\nInstalled. Restart QGIS to use the plugin.")
        else:
            self.log.appendPlainText(
                "\nThe installation failed (see above). Check the network connection, or install the "
                f"packages yourself: {' '.join(PINNED.get(p, p) for p in self.missing)}"
            )
            self.install_button.setEnabled(True)
        self.installed.emit(code == 0)
