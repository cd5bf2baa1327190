"""Every run config of a study, as its runner builds them (for tests that check the runs, not run them)."""

from pathlib import Path

from cluster.config import TrainConfig
from cluster.study.config import Study
from cluster.study.runner import plan_jobs

INIT_POLICY = Path("/x/policy")  # where the init's exported policy would be: the arms load it


def study_runs(study: Study) -> dict[str, TrainConfig]:
    """Run label ("init (seed 0)", "rl (seed 2)", ...) -> its config, in the runner's order."""
    return {
        job.label: study.init_config(job.seed)
        if job.kind == "init"
        else study.arm_config(job.kind, job.seed, init_policy=INIT_POLICY, prior_train_tokens=0)
        for job in plan_jobs(study, Path("/study"))
    }
