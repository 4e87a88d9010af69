"""errors.py: running named jobs concurrently and reporting their failures readably."""

import anyio
import dagger
import pytest
from dagger._exceptions import QueryErrorValue
from gql import gql
from mcp_trader.errors import JobFailedError, describe, run_all


async def test_run_all_starts_every_job_before_awaiting_any() -> None:
    started = anyio.Event()

    async def first() -> str:
        with anyio.fail_after(5):
            await started.wait()  # only the second job sets it
        return "one"

    async def second() -> str:
        started.set()
        return "two"

    assert await run_all({"a": first, "b": second}) == {"a": "one", "b": "two"}


def exec_error(stderr: str, stdout: str = "") -> dagger.ExecError:
    errors = [
        QueryErrorValue(
            message='process "cargo build" did not complete successfully: exit code: 101',
            extensions={
                "_type": "EXEC_ERROR",
                "cmd": ["cargo", "build"],
                "exitCode": 101,
                "stdout": stdout,
                "stderr": stderr,
            },
        )
    ]
    err = dagger.QueryError(errors, gql("{ defaultPlatform }"))
    assert isinstance(err, dagger.ExecError)
    return err


def test_describe_appends_the_end_of_the_output() -> None:
    long = "\n".join(f"line {i}" for i in range(200))
    text = describe(exec_error(long))
    assert text.startswith('process "cargo build" did not complete successfully')
    assert "line 199" in text and "line 100" not in text
    assert "only stdout" in describe(exec_error("", stdout="only stdout"))
    assert describe(RuntimeError()) == "RuntimeError"


async def test_run_all_reports_every_failure_once_in_job_order() -> None:
    async def ok() -> int:
        return 1

    async def bad(msg: str) -> int:
        raise RuntimeError(msg)

    with pytest.raises(JobFailedError) as info:
        await run_all({"x": lambda: bad("x broke"), "ok": ok, "y": lambda: bad("y broke")})
    assert list(info.value.failures) == ["x", "y"]
    assert str(info.value) == "x failed: x broke\n\ny failed: y broke"
