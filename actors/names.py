"""Names of the deployment's named Ray actors (all in the namespace from Settings)."""

COORDINATOR = "batchlog-coordinator"
UPSTREAM = "batchlog-upstream"


def batch_actor(batch_id: str) -> str:
    return f"batchlog-batch-{batch_id}"


def runner(suffix: str) -> str:
    """A batch actor kept between batches (`actors/runners.py`)."""
    return f"batchlog-runner-{suffix}"
