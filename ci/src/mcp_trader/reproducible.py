"""What two builds of one commit share, so their images get one digest (docs/reproducibility.md).

- Every file the builds copy into an image (the provider binary, the gateway's virtualenv)
  gets the same modification time, `FILE_EPOCH`, instead of the time its build exec ran.
- `SOURCE_DATE_EPOCH` is set where a tool reads it: Python's `py_compile` (what uv's
  `--compile-bytecode` runs) then writes hash-checked `.pyc` files instead of ones stamped
  with each source file's mtime, which differs on every install.
- The `created` label and config come from the commit (publish's `--created`), never "now".
"""

from __future__ import annotations

from typing import Final

#: 1980-01-01T00:00:00Z: the earliest time a zip (and so a wheel) can hold; any fixed value would
#: do, and a fixed one keeps the build cache valid across commits (the commit time would not).
FILE_EPOCH: Final = 315532800
SOURCE_DATE_EPOCH: Final = str(FILE_EPOCH)
