"""The one exception type users see: a one-line message naming the file and the fix."""

from __future__ import annotations

from pathlib import Path


class StainsegError(Exception):
    """A problem with the user's input or environment, reported as one line (no traceback).

    Parameters
    ----------
    message : str
        What went wrong and what to do about it.
    path : str or Path, optional
        The file or folder concerned; it is put at the front of the message.

    Examples
    --------
    >>> err = StainsegError("is not a TIFF file;\\n give an image file", "plate/A01.txt")
    >>> str(err)
    'plate/A01.txt: is not a TIFF file; give an image file'
    >>> err.path
    'plate/A01.txt'
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else str(path)
        text = f"{self.path}: {message}" if self.path else message
        super().__init__(" ".join(text.split()))  # always one line
