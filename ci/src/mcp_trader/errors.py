"""Running named jobs concurrently and reporting their failures as one readable error.

`dagger call build-all` should tell a user *which* build failed and show the compiler's own
words, not an `ExceptionGroup` traceback: an `ExecError`'s message is only "process ... did not
complete successfully"; the useful part is its stderr.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

import anyio
import dagger

T = TypeVar("T")

#: How much of a failed command's output to repeat: the end is where compilers put the error.
OUTPUT_LINES: Final = 60


class JobFailedError(Exception):
    """One or more named jobs failed; the message names each and carries its output."""

    def __init__(self, failures: Mapping[str, BaseException]) -> None:
        self.failures = dict(failures)
        super().__init__(
            "\n\n".join(f"{name} failed: {describe(err)}" for name, err in self.failures.items())
        )


def describe(error: BaseException) -> str:
    """A failure in a user's terms: the message, plus the command's output for an ExecError."""
    text = str(error).strip() or type(error).__name__
    if isinstance(error, dagger.ExecError):
        output = tail(error.stderr) or tail(error.stdout)
        if output:
            text = f"{text}\n{output}"
    return text


def tail(output: str, lines: int = OUTPUT_LINES) -> str:
    """The last `lines` lines of a command's output."""
    return "\n".join(output.strip().splitlines()[-lines:])


async def run_all(jobs: Mapping[str, Callable[[], Awaitable[T]]]) -> dict[str, T]:
    """Run every job concurrently (all started before any is awaited) and return their results.

    A failing job does not cancel the others, so every failure is reported at once, in the
    jobs' order, as a single `JobFailedError` (never an exception group).
    """
    results: dict[str, T] = {}
    failures: dict[str, BaseException] = {}

    async def run(name: str, job: Callable[[], Awaitable[T]]) -> None:
        try:
            results[name] = await job()
        except Exception as err:  # reported below, with every other failure
            failures[name] = err

    async with anyio.create_task_group() as tg:
        for name, job in jobs.items():
            tg.start_soon(run, name, job)
    if failures:
        ordered = {name: failures[name] for name in jobs if name in failures}
        raise JobFailedError(ordered) from next(iter(ordered.values()))
    return {name: results[name] for name in jobs}
