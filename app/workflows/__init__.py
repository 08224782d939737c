"""Durable multi-step workflows on QStash deliveries.

```python
from app import workflow

@workflow("onboard-user", schema=OnboardPayload)
def onboard(ctx, payload):
    user = ctx.run("create-account", create_account, payload["email"])
    ctx.sleep("wait-3-days", "3d")
    confirmed = ctx.wait_for_event("confirmed", f"user-confirmed:{user['id']}", timeout="7d")
    ...

run_id = onboard.start({"email": "a@example.com"})
```

Modules: ``definition`` (``@workflow``, ``Workflow``), ``context`` (the ``ctx`` steps and
replay), ``engine`` (one delivery's work: lease, replay, waits, branches), ``state`` (the
store's statements), ``calls`` (``ctx.call``'s outbound request).
"""

from __future__ import annotations

from app.workflows.context import Context, NonDeterministic
from app.workflows.definition import RunFailure, Workflow, workflow
from app.workflows.engine import UnknownRun, cancel, notify, resume, store_engine
from app.workflows.state import Run, Step

__all__ = [
    "Context",
    "NonDeterministic",
    "Run",
    "RunFailure",
    "Step",
    "UnknownRun",
    "Workflow",
    "cancel",
    "get_run",
    "list_runs",
    "notify",
    "resume",
    "workflow",
]


def get_run(run_id: str) -> Run:
    """Return run ``run_id`` with its steps (in the current app); raise ``UnknownRun``."""
    from app.workflows import state

    run = state.get(store_engine(), run_id)
    if run is None:
        raise UnknownRun(f"no workflow run {run_id!r}")
    return run


def list_runs(
    *, workflow: str | None = None, state: str | None = None, limit: int = 50
) -> list[Run]:
    """Return the newest runs (without steps), newest first (in the current app)."""
    from app.workflows import state as stored

    return stored.runs(store_engine(), workflow=workflow, state=state, limit=limit)
