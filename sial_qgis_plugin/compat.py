"""One plugin for QGIS 3.40 LTR to QGIS 4 (Qt 5 and Qt 6).

The rest of the plugin follows three rules, checked on its sources by tests/test_qt6_ready.py:
enums are written fully scoped (``Qt.AlignmentFlag.AlignLeft``, never ``Qt.AlignLeft``: PyQt6
knows only the scoped form), dialogs are run with ``exec()`` or ``open()`` (never ``exec_``),
and Qt is imported through ``qgis.PyQt`` only. What still differs between versions lives here:

- ``QAction`` and ``QShortcut`` moved from QtWidgets (Qt 5) to QtGui (Qt 6);
- QGIS moved some enums into the ``Qgis`` namespace, some with new value names
  (``QgsProcessing.SourceType.TypeVectorPolygon`` is ``Qgis.ProcessingSourceType.VectorPolygon``
  from 3.36): :func:`qgis_enum` takes the newest spelling first and falls back to the older;
- enum values are ints in PyQt5 and enum members in PyQt6: :func:`as_int`.
"""

from __future__ import annotations

from typing import Any

try:  # Qt 6
    from qgis.PyQt.QtGui import QAction, QShortcut
except ImportError:  # Qt 5
    from qgis.PyQt.QtWidgets import QAction, QShortcut

__all__ = ["QAction", "QShortcut", "as_int", "qgis_enum"]


def qgis_enum(*spellings: str) -> Any:
    """The first of ``spellings`` (dotted paths from ``qgis.core``, newest first) that this QGIS
    knows, e.g. ``qgis_enum("Qgis.ShaderInterpolationMethod.Linear",
    "QgsColorRampShader.Type.Interpolated")``."""
    from qgis import core

    for spelling in spellings:
        value: Any = core
        try:
            for part in spelling.split("."):
                value = getattr(value, part)
        except AttributeError:
            continue
        return value
    raise AttributeError(f"this QGIS has none of {', '.join(spellings)}")


def as_int(value: Any) -> int:
    """An enum value (a PyQt5 int or a PyQt6 enum member) or an int, as an int."""
    return int(getattr(value, "value", value))
