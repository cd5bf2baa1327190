"""The GPU check (`tests/gpu/check.py`) as tests: marker `gpu`, so every test skips without CUDA.

    python -m pytest tests/gpu -m gpu -s -p no:cacheprovider

One test per model (the text policy, then tiny-mllama), each failing on any FAIL row of its own;
the table of every row prints when the module ends (shown with -s) and is written under $OUT when
set. Always on CUDA: the CPU dry run is `SFTRL_GPU_CHECK_DEVICE=cpu python -m tests.gpu.check`.
Nothing heavy is imported at collection: the check imports the project when it starts.
"""

import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def check():
    from tests.gpu.check import Check, Settings

    run = Check(Settings(device="cuda", without=Settings.from_env().without))
    ready = run.setup()
    yield run if ready else None
    run.finish()


@pytest.mark.parametrize("role", ["text", "vlm"])
def test_model_on_gpu(check, role):
    if check is None:
        pytest.fail("the check cannot start here: see the skipped and failed rows of its table")
    if role not in check.subjects:
        pytest.fail(f"no {role} model to measure: see the env rows of the table")
    failed = [row for row in check.measure(check.subjects[role]) if row.failed]
    assert not failed, "\n".join(f"{row.name}: {row.status}" for row in failed)
