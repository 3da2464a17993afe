"""When torch & co. are missing: explain, and install them for this QGIS's Python on request.

Packages go to a plugin-private folder (never into QGIS's own Python), at the versions the
plugin is tested with (installer.py: QGIS's interpreter, the constraints, pip's failures in one
sentence). QGIS's numpy is kept as it is (its GDAL bindings are built against it). pip runs in
a separate process; its output is shown as it comes.
"""

from __future__ import annotations

import shutil

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
from .installer import InterpreterNotFound, explain_failure, find_python, install_command


def python_executable() -> str:
    """QGIS's own Python interpreter (installer.find_python; raises InterpreterNotFound, never
    falls back to the PATH's python3)."""
    return find_python()


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
        self.python, self.output, self.failure = "", "", ""
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
        self.install_button = self.buttons.addButton("Install", QDialogButtonBox.ButtonRole.AcceptRole)
        self.close_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Close)
        self.install_button.clicked.connect(self.start_install)
        self.close_button.clicked.connect(self.reject)
        layout.addWidget(self.buttons)

    @property
    def build(self) -> str:
        return "cpu" if self.cpu.isChecked() else "cuda"

    def command(self) -> list[str]:
        """The pip command line (raises InterpreterNotFound when QGIS's Python is not found)."""
        import numpy

        return install_command(find_python(), self.missing, self.target, self.build, numpy.__version__)

    def start_install(self) -> None:
        try:
            command = self.command()
        except InterpreterNotFound as exc:
            self.log.appendPlainText(str(exc))
            self.install_button.setEnabled(False)
            return
        self.target.mkdir(parents=True, exist_ok=True)
        self.python, self.output = command[0], ""
        self.log.appendPlainText("$ " + " ".join(command))
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.readyReadStandardOutput.connect(self._show_output)
        self.process.finished.connect(self._finished)
        self.process.errorOccurred.connect(lambda _: self._finished(-1, None))
        self.install_button.setEnabled(False)
        self.progress.setRange(0, 0)  # busy: pip does not report a total
        self.process.start(command[0], command[1:])

    def _show_output(self) -> None:
        assert self.process is not None
        text = bytes(self.process.readAllStandardOutput()).decode("utf-8", "replace")
        self.output += text
        self.log.appendPlainText(text.rstrip())

    def _finished(self, code: int, _status) -> None:
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if code == 0 else 0)
        if code == 0:
            self.log.appendPlainText("\nInstalled. Restart QGIS to use the plugin.")
        else:
            reason = explain_failure(self.output, code, self.python, self.target)
            self.failure = reason
            self.log.appendPlainText(f"\nThe installation failed. {reason}")
            self.install_button.setEnabled(True)
        self.installed.emit(code == 0)
