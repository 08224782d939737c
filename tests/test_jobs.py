"""The job registry: declarations are validated where they are written."""

from __future__ import annotations

import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import Schema, fields

from app import create_app
from app.errors import JobDefinitionError
from app.jobs import MAX_RETRIES, NAME_LIMIT, Job, JobRegistry
from app.publishing.jobs import job_message
from app.qstash.cron import parse_cron
from app.qstash.timing import MAX_DURATION
from app.testing import DeliveryClient
from tests.conftest import TEST_CONFIG


def handler(payload: Any, delivery: Any) -> None:
    """Do nothing."""


def test_bare_decorator_names_job_after_function() -> None:
    """@job without arguments names the job after the function, kebab-cased."""
    registry = JobRegistry()

    @registry.job
    def send_welcome_email(payload: Any, delivery: Any) -> None:
        """Send the welcome email."""

    assert send_welcome_email.name == "send-welcome-email"
    assert send_welcome_email.path == "/api/jobs/send-welcome-email"
    assert send_welcome_email.description == "Send the welcome email."
    assert "send-welcome-email" in registry


def test_options_are_kept_on_the_job() -> None:
    """Declared delivery defaults are stored on the Job."""
    registry = JobRegistry()
    job = registry.job(
        "process-image", retries=2, queue="image-processing", parallelism=3, timeout="2m"
    )(handler)
    assert (job.retries, job.queue, job.parallelism, job.timeout) == (
        2,
        "image-processing",
        3,
        "2m",
    )
    assert job.url("https://api.example.com/") == "https://api.example.com/api/jobs/process-image"


def test_duplicate_name_fails_at_declaration() -> None:
    """Registering a name twice fails with the name in the message."""
    registry = JobRegistry()
    registry.job("send-email")(handler)
    with pytest.raises(JobDefinitionError, match="A job named 'send-email' is already registered"):
        registry.job("send-email")(handler)


@pytest.mark.parametrize("name", ["Send-Email", "send_email", "-x", "x-", "a--b", "a/b", ""])
def test_malformed_name_fails_at_declaration(name: str) -> None:
    """Job names must be URL-safe kebab-case."""
    registry = JobRegistry()
    with pytest.raises(JobDefinitionError, match="invalid job name"):
        registry.add(Job(name=name, handler=handler))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"retries": -1}, "retries"),
        ({"retries": "3"}, "retries"),
        ({"retries": True}, "retries"),
        ({"retries": 3.0}, "retries"),
        ({"retries": MAX_RETRIES + 1}, "retries must be an int from 0 to 100"),
        ({"retries": 10**5000}, "more than 20 digits"),
        ({"parallelism": 0, "queue": "q"}, "parallelism"),
        ({"parallelism": True, "queue": "q"}, "parallelism"),
        ({"parallelism": 2}, "needs a queue"),
        ({"retires": 3}, "unknown option"),
        ({"delay": "5m"}, "unknown option"),
        ({"flow_control": {"key": "k"}}, "unknown option"),
        ({"cron": "* * * * *"}, "@cron"),
        ({"schema": dict}, "marshmallow Schema"),
        ({"timeout": "banana"}, "timeout 'banana' is not a duration: use whole numbers"),
        ({"timeout": "90"}, "timeout '90' is not a duration"),
        ({"timeout": "1.5h"}, "is not a duration"),
        ({"timeout": "1m1h"}, "is not a duration"),
        ({"timeout": "\u0661m"}, "is not a duration"),
        ({"timeout": "999999999999d"}, "292 years"),
        ({"timeout": 0}, "at least 1 second"),
        ({"timeout": "0s"}, "at least 1 second"),
        ({"timeout": -5}, "timeout must be from 0"),
        ({"timeout": float("nan")}, "timeout must be from 0"),
        ({"timeout": True}, "timeout must be seconds"),
        ({"retry_delay": "retried ** 2"}, "retry_delay"),
        ({"retry_delay": "__import__('os')"}, "retry_delay"),
        ({"retry_delay": 1000}, "retry_delay must be an expression"),
        ({"callback": "ftp://x.example/cb"}, "callback must be an absolute http"),
        ({"callback": "https://"}, "callback must be an absolute http"),
        ({"callback": "https://x.example/a\r\nX: 1"}, "callback must be an absolute http"),
        ({"callback": "Not A Job"}, "callback must be an http"),
        ({"failure_callback": "/relative"}, "failure_callback must be an http"),
        ({"failure_callback": 42}, "failure_callback must be an http"),
        ({"queue": "bad/queue"}, "queue must be"),
        ({"queue": ""}, "queue must be"),
        ({"queue": "q" * 201}, "queue must be"),
        ({"description": 5}, "description must be a string"),
        ({"dedupe": "yes"}, "dedupe must be True or False"),
        ({"dedupe": None}, "dedupe must be True or False"),
        ({"description": None}, "description must be a string"),
    ],
)
def test_invalid_options_fail_at_declaration(options: dict[str, Any], message: str) -> None:
    """Mistyped or impossible options fail at import with the job's name and what is
    wrong, not at the first enqueue; the registry keeps no half-declared job."""
    registry = JobRegistry()
    with pytest.raises(JobDefinitionError, match=re.escape(message)) as refused:
        registry.job("x", **options)(handler)
    assert str(refused.value).startswith(("job 'x': ", "declare scheduled jobs"))
    assert "x" not in registry


@pytest.mark.parametrize(
    "options",
    [
        {"timeout": "1h30m"},
        {"timeout": " 1d10h30m "},
        {"timeout": 1},
        {"timeout": 2.5},
        {"timeout": timedelta(minutes=5)},
        {"retries": 0},
        {"retries": MAX_RETRIES},
        {"retry_delay": "pow(2, retried) * 1000"},
        {"callback": "https://hooks.example/done?x=1", "failure_callback": "webhook-failed"},
        {"queue": "image.processing_2", "parallelism": 5},
        {"description": "", "dedupe": False},
    ],
)
def test_valid_options_are_accepted_and_publish(options: dict[str, Any]) -> None:
    """Every option QStash accepts passes declaration and makes a valid message."""
    registry = JobRegistry()
    job = registry.job("x", **options)(handler)
    message = job_message(job, {}, app_url="https://app.example")
    assert message.destination == "https://app.example/api/jobs/x"


def test_a_compound_timeout_is_whole_seconds() -> None:
    """timeout="1h30m" is 5400 s for the guard's lease, sent to QStash as written."""
    job = JobRegistry().job("x", timeout="1h30m")(handler)
    assert job.timeout_seconds == 5400
    assert JobRegistry().job("y")(handler).timeout_seconds is None
    headers = job_message(job, {}, app_url="https://a.example").options.headers_dict()
    assert headers["Upstash-Timeout"] == "1h30m"


def test_a_reused_decorator_declares_independent_jobs() -> None:
    """One decorator declaring two jobs gives each its own options and description."""
    registry = JobRegistry()
    decorator = registry.job(retries=2)

    def first(payload: Any, delivery: Any) -> None:
        """The first job."""

    def second(payload: Any, delivery: Any) -> None:
        """The second job."""

    def third(payload: Any, delivery: Any) -> None:
        pass

    jobs = [decorator(first), decorator(second), decorator(third)]
    assert [(j.name, j.retries, j.description) for j in jobs] == [
        ("first", 2, "The first job."),
        ("second", 2, "The second job."),
        ("third", 2, ""),
    ]


def test_an_overlong_name_fails_at_declaration() -> None:
    """A name wider than the store's job column (100) is refused, shortened in the error."""
    registry = JobRegistry()
    registry.job("a" * NAME_LIMIT)(handler)
    with pytest.raises(JobDefinitionError, match="at most 100 characters") as refused:
        registry.job("b" * 5000)(handler)
    assert len(str(refused.value)) < 300


def test_a_callback_to_an_undeclared_job_fails_at_discovery(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A callback naming a job is checked once every job module was imported: a job
    declared later in the package is fine, a typo is a JobDefinitionError."""
    package = tmp_path / "cbjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text(
        "import tests.test_jobs as t\n"
        "t.CALLBACKS.job('a', failure_callback='b')(t.handler)\n"
        "t.CALLBACKS.job('c', callback='no-such-job')(t.handler)\n"
    )
    (package / "b.py").write_text("import tests.test_jobs as t\nt.CALLBACKS.job('b')(t.handler)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(JobDefinitionError, match="job 'c': callback 'no-such-job'"):
            CALLBACKS.discover(["cbjobs"])
    finally:
        for name in ("cbjobs", "cbjobs.a", "cbjobs.b"):
            sys.modules.pop(name, None)
    assert "a" in CALLBACKS and "b" in CALLBACKS


@pytest.mark.parametrize(
    "expression",
    ["0 9 * * 1-5", "7 * * * *", "CRON_TZ=Europe/Istanbul 0 8 * * 0", "*/5 * * * *"],
)
def test_valid_cron_is_accepted(expression: str) -> None:
    """QStash's cron forms, with and without CRON_TZ, are accepted."""
    registry = JobRegistry()
    job = registry.cron("digest", cron=expression)(handler)
    assert job.cron is not None and job.cron.text == expression


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 9 * *", "5 fields"),
        ("0 0 9 * * 1", "5 fields"),
        ("61 * * * *", "invalid cron"),
        ("CRON_TZ=Mars/Olympus 0 8 * * *", "unknown time zone"),
        ("", "non-empty"),
    ],
)
def test_bad_cron_fails_at_declaration(expression: str, message: str) -> None:
    """A bad cron expression fails at import with what is wrong."""
    registry = JobRegistry()
    with pytest.raises(JobDefinitionError, match=message):
        registry.cron("digest", cron=expression)(handler)


def test_cron_next_runs_honour_time_zone() -> None:
    """Next runs are computed in the CRON_TZ zone."""
    expression = parse_cron("CRON_TZ=America/New_York 0 9 * * *")
    runs = expression.next_runs(2, after=datetime(2026, 1, 5, 12, 0, tzinfo=UTC))
    assert [r.astimezone(UTC).hour for r in runs] == [14, 14]
    assert runs[1].day == runs[0].day + 1


def test_schema_class_is_instantiated_once() -> None:
    """A schema class is turned into one reusable instance at declaration."""

    class Payload(Schema):
        name = fields.String(required=True)

    job = JobRegistry().job("x", schema=Payload)(handler)
    assert isinstance(job.schema, Payload)


def test_discovery_imports_job_modules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """create_app imports every module of JOBS_PACKAGES and mounts their jobs."""
    package = tmp_path / "myjobs"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "greet.py").write_text(
        "from app.jobs import JobRegistry\n"
        "import tests.test_jobs as t\n"
        "@t.DISCOVERY.job('greet')\n"
        "def greet(payload, delivery):\n"
        "    return {'hello': payload['name']}\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = DISCOVERY
    imported = registry.discover(["myjobs"])
    assert imported == ["myjobs", "myjobs.greet"]
    app = create_app(TEST_CONFIG, registry=registry)
    response = DeliveryClient(app).deliver("greet", {"name": "Ada"})
    assert response.get_json() == {"hello": "Ada"}
    sys.modules.pop("myjobs.greet", None)
    sys.modules.pop("myjobs", None)


def test_missing_job_package_is_a_clear_error() -> None:
    """A JOBS_PACKAGES entry that does not exist is named in the error."""
    with pytest.raises(JobDefinitionError, match="no_such_jobs"):
        JobRegistry().discover(["no_such_jobs"])


DISCOVERY = JobRegistry()
CALLBACKS = JobRegistry()


def _durations() -> st.SearchStrategy[Any]:
    pairs = st.lists(
        st.tuples(st.integers(0, 10**12), st.sampled_from(["d", "h", "m", "s", "ms", ""])),
        min_size=1,
        max_size=4,
    )
    return st.one_of(
        pairs.map(lambda ps: "".join(f"{n}{u}" for n, u in ps)),
        st.integers(-5, 10**12),
        st.floats(allow_nan=True, allow_infinity=True),
        st.timedeltas(),
        st.text(max_size=12),
    )


OPTION_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "retries": st.one_of(st.integers(-3, 150), st.booleans(), st.text(max_size=3)),
    "retry_delay": st.one_of(
        st.sampled_from(["1000", "pow(2, retried) * 1000", "retried ** 2", "open('x')", ""]),
        st.integers(),
    ),
    "queue": st.one_of(st.from_regex(r"\A[A-Za-z0-9_.\-/ ]{0,12}\Z"), st.integers()),
    "parallelism": st.one_of(st.integers(-2, 20), st.booleans()),
    "callback": st.one_of(
        st.builds(
            "{}://{}/{}".format,
            st.sampled_from(["http", "https", "ftp", "javascript", ""]),
            st.sampled_from(["hooks.example", "", "a b", "x.example:99999"]),
            st.text(max_size=8),
        ),
        st.sampled_from(["send-email", "Not A Job", "", "a--b"]),
    ),
    "timeout": _durations(),
    "description": st.one_of(st.text(max_size=10), st.integers()),
    "dedupe": st.one_of(st.booleans(), st.integers(0, 1)),
}


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(sorted(OPTION_VALUES)), st.none()).flatmap(
    lambda keys: st.fixed_dictionaries({key: OPTION_VALUES[key] for key in keys})
))  # fmt: skip
def test_a_declared_job_always_publishes(options: dict[str, Any]) -> None:
    """Any mix of good and bad options either fails at declaration with a
    JobDefinitionError, or gives a job whose messages publish and whose lease is known."""
    registry = JobRegistry()
    try:
        job = registry.job("x", **options)(handler)
    except JobDefinitionError:
        return
    message = job_message(job, {}, app_url="https://app.example")
    assert message.options.headers_dict()["Content-Type"] == "application/json"
    seconds = job.timeout_seconds
    assert seconds is None or 1 <= seconds <= MAX_DURATION
