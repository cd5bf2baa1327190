"""Unit tests of `VersionGate`: one version per request across a swap, versions only go up."""

import asyncio

import pytest

from serving.version_gate import VersionGate
from serving.weights import StaleVersionError


def test_a_swap_waits_for_running_requests_and_holds_new_ones():
    async def main():
        gate, log = VersionGate(), []
        release = asyncio.Event()

        async def request(name):
            async with gate.generating() as version:
                log.append((name, "start", version))
                if name == "early":
                    await release.wait()
                log.append((name, "end", version))

        async def swap():
            async with gate.swapping(1) as fresh:
                log.append(("swap", "start", fresh))
                await asyncio.sleep(0.01)
                log.append(("swap", "end", fresh))

        early = asyncio.create_task(request("early"))
        await asyncio.sleep(0.01)
        swapper = asyncio.create_task(swap())
        await asyncio.sleep(0.01)
        late = asyncio.create_task(request("late"))
        await asyncio.sleep(0.01)
        assert log == [("early", "start", 0)]  # the swap waits for `early`, `late` waits for the swap
        release.set()
        await asyncio.gather(early, swapper, late)
        return gate, log

    gate, log = asyncio.run(main())
    assert log == [
        ("early", "start", 0),
        ("early", "end", 0),
        ("swap", "start", True),
        ("swap", "end", True),
        ("late", "start", 1),
        ("late", "end", 1),
    ]
    assert gate.version == 1 and gate.running == 0


def test_versions_only_go_up_and_the_current_one_is_a_no_op():
    async def main():
        gate = VersionGate(version=3)
        async with gate.swapping(3) as fresh:
            assert not fresh
        with pytest.raises(StaleVersionError):
            async with gate.swapping(2):
                pass
        return gate

    assert asyncio.run(main()).version == 3


def test_a_failed_swap_keeps_the_old_version_and_reopens_the_gate():
    async def main():
        gate = VersionGate()
        with pytest.raises(RuntimeError):
            async with gate.swapping(1):
                raise RuntimeError("load failed")
        async with gate.generating() as version:
            return version

    assert asyncio.run(main()) == 0
