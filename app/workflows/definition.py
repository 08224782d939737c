"""``@workflow``: a durable multi-step function, mounted and published like a job.

A ``Workflow`` is a ``Job`` whose handler is the workflow engine: QStash delivers to
``POST /api/jobs/<name>`` as for any job, the duplicate guard and the delivery log see
it as one, and ``flask jobs list`` lists it. The user's function ``(ctx, payload)`` is
replayed on each delivery (``app.workflows.engine``); the ``ctx`` it gets records each
step (``app.workflows.context``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from marshmallow import Schema

from app.errors import JobDefinitionError
from app.jobs import Job, JobRegistry, schema_instance
from app.jobs import registry as default_registry

if TYPE_CHECKING:
    from app.delivery import Delivery
    from app.workflows.context import Context

__all__ = ["RunFailure", "Workflow", "WorkflowFunction", "workflow"]

WorkflowFunction = Callable[["Context", Any], Any]


@dataclass(frozen=True)
class RunFailure:
    """What a workflow's ``on_failure`` function is told when a run fails for good."""

    run_id: str
    workflow: str
    #: The step that failed (None: the workflow's own code between steps).
    step: str | None
    error: str
    #: The run's input, as JSON text.
    input: str


FailureFunction = Callable[[RunFailure], Any]


@dataclass(eq=False)
class Workflow(Job):
    """A registered workflow: its function, input schema and failure function."""

    function: WorkflowFunction | None = None
    input_schema: Schema | None = None
    on_failure: FailureFunction | None = None

    def __post_init__(self) -> None:
        self.handler = self._deliver

    @property
    def payload_schema(self) -> Schema | None:
        """The input's schema (the endpoint itself takes start inputs and empty pokes)."""
        return self.input_schema

    def _deliver(self, payload: Any, delivery: Delivery) -> Any:
        from app.workflows import engine

        return engine.deliver(self, payload, delivery)

    def start(self, payload: Any = None, /, *, run_id: str | None = None, **options: Any) -> str:
        """Validate ``payload`` and start a run; return its id.

        Idempotent per ``run_id``: starting an id that exists already starts nothing
        (default: a new random id). ``options`` are publish options (``delay``,
        ``not_before``…). A payload failing the schema raises marshmallow's
        ``ValidationError`` here, before anything is published.
        """
        from app.workflows import engine

        return engine.start(self, payload, run_id=run_id, **options)

    def enqueue(self, payload: Any = None, /, **options: Any) -> str:
        """Start a run (``start``); return its id."""
        return self.start(payload, **options)

    def __repr__(self) -> str:
        return f"<Workflow {self.name}>"


_OPTIONS = frozenset({"retries", "retry_delay", "queue", "parallelism", "timeout", "description"})


def workflow(
    name: str | None = None,
    /,
    *,
    schema: type[Schema] | Schema | None = None,
    on_failure: FailureFunction | None = None,
    registry: JobRegistry | None = None,
    **options: Any,
) -> Callable[[WorkflowFunction], Workflow]:
    """Declare a workflow: ``@workflow("onboard-user", schema=Onboard)`` on ``fn(ctx, payload)``.

    Options: ``retries`` (per step, QStash's default 3), ``retry_delay``, ``timeout``
    (one delivery's), ``queue``/``parallelism``, ``description``, ``on_failure``
    (called once with a ``RunFailure`` when a run fails for good).
    """
    unknown = set(options) - _OPTIONS
    if unknown:
        raise JobDefinitionError(
            f"workflow {name!r}: unknown option(s) {', '.join(sorted(unknown))}"
            f" (a workflow takes {', '.join(sorted(_OPTIONS | {'schema', 'on_failure'}))})"
        )
    if on_failure is not None and not callable(on_failure):
        raise JobDefinitionError(f"workflow {name!r}: on_failure is not callable")

    def decorator(function: WorkflowFunction) -> Workflow:
        if not callable(function):
            raise JobDefinitionError(f"workflow {name!r}: the function is not callable")
        workflow_name = name or function.__name__.strip("_").replace("_", "-").lower()
        doc = function.__doc__
        declared = Workflow(
            name=workflow_name,
            handler=function,  # replaced by the engine's entry in __post_init__
            description=doc.strip().split("\n")[0] if doc else "",
            function=function,
            input_schema=schema_instance(schema, f"workflow {workflow_name!r}"),
            on_failure=on_failure,
            **options,
        )
        (default_registry if registry is None else registry).add(declared)
        return declared

    return decorator
