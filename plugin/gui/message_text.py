"""A read-only message for the dialog's and the dock's status lines.

A QLabel wraps at spaces only: a Sentinel-1 product name or a path has none, so one such
word set the width of the whole dialog or dock (a dock 904 px wide with a 380 px window),
and a long message (a backend that cannot run, with its pip command) took all the height.
This one wraps anywhere a word does not fit, shows at most ``max_lines`` lines and scrolls
beyond them, never takes rich text, and copies as written.

:func:`push_message` puts a message in QGIS's message bar as the text it is.
"""
from __future__ import annotations

import html
import math

from qgis.PyQt.QtCore import QSize, Qt
from qgis.PyQt.QtGui import QPalette, QTextCursor, QTextOption
from qgis.PyQt.QtWidgets import QFrame, QSizePolicy, QTextEdit

from ..backend_process import TAG


class MessageText(QTextEdit):
    """``text()`` and ``setText()`` as a QLabel's; plain text only."""

    def __init__(self, text: str = "", max_lines: int = 5):
        super().__init__()
        self.setReadOnly(True)
        self.setAcceptRichText(False)
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.document().setDocumentMargin(0)
        palette = self.palette()   # drawn as a label is, on the window's colour
        palette.setColor(QPalette.ColorRole.Base, palette.color(QPalette.ColorRole.Window))
        self.setPalette(palette)
        # half a line more: a text's lines are a pixel or two taller than the font's spacing,
        # and a longer one shows half its next line, a sign that it scrolls
        self._max_height = (max_lines + 0.5) * self.fontMetrics().lineSpacing()
        self.setText(text)

    def text(self) -> str:
        return self.toPlainText()

    def setText(self, text: str) -> None:  # noqa: N802 (QLabel's name)
        self.setPlainText(text)
        self.moveCursor(QTextCursor.MoveOperation.Start)   # a resize keeps the cursor in view: the top
        self._fit()

    def resizeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        super().resizeEvent(event)
        self._fit()   # a new width wraps the text into another number of lines

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt's name)
        return QSize(0, self.height())   # its width is the layout's, never its text's

    def _fit(self) -> None:
        """As tall as the wrapped text, up to ``max_lines`` lines (0 when empty)."""
        height = self.document().size().height() if self.toPlainText() else 0
        self.setVerticalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAsNeeded if height > self._max_height
                                        else Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setFixedHeight(math.ceil(min(height, self._max_height)) + 2 * self.frameWidth())


def push_message(bar, text: str, *args, **kwargs) -> None:
    """A message in QGIS's message bar, which renders HTML and opens a link when clicked:
    a model card's name, a file name or a backend message is shown as the text it is."""
    bar.pushMessage(TAG, html.escape(text, quote=False), *args, **kwargs)
