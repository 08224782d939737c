"""onboard-user: the example workflow, built from the send-email job and ``ctx.call``.

One run per new user, as one function (defaults shown; each is a setting below)::

    day 0      welcome email                      ctx.run   -> the send-email job
    day 0-3    three days to try the product      ctx.sleep
    day 3-10   up to a week for an upgrade        ctx.wait_for_event("user-upgraded:<email>")
    day 10     no upgrade: a follow-up email      ctx.run   -> the send-email job
    then       the CRM hears the outcome          ctx.call  (skipped without a CRM URL)

An upgrade notified at any time after the run started counts, during the three days too
(a notification is kept ``WORKFLOW_EVENT_RETENTION_DAYS`` for runs that reach their wait
later). Start and notify::

    run_id = onboard_user.start({"email": "ada@example.com", "name": "Ada"})
    notify(upgraded_event("ada@example.com"), {"plan": "pro"})

(``flask jobs enqueue onboard-user '<json>'`` starts a run too, and
``POST /api/workflows/events/<event id>`` notifies over HTTP.) Notify with some data:
``wait_for_event`` returns None both at the timeout and for an event whose data is None.

The function runs again from the top on every delivery and each ``ctx`` step returns
its recorded result instead of running twice; so whatever may differ between deliveries
(the configuration after a deploy, the clock, a database) is read inside a step.

Settings (``app.config``; from the environment as ``FLASK_ONBOARDING_QUIET_PERIOD=3d``…):

- ``ONBOARDING_QUIET_PERIOD``: how long the run sleeps after the welcome email;
- ``ONBOARDING_UPGRADE_WINDOW``: how long it then waits for an upgrade;
- ``ONBOARDING_CRM_URL``: where the outcome is POSTed (unset: not sent), through the
  SSRF-safe client deliver-webhook uses (``WEBHOOK_*`` settings): a private or loopback
  address needs ``WEBHOOK_ALLOWED_NETWORKS``.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from marshmallow import Schema, fields

from app.workflows import Context, workflow
from jobs.email import send_email
from jobs.email_payload import Text

__all__ = ["SETTINGS", "OnboardUser", "onboard_user", "upgraded_event"]

#: Each setting and its default.
SETTINGS: dict[str, Any] = {
    "ONBOARDING_QUIET_PERIOD": "3d",
    "ONBOARDING_UPGRADE_WINDOW": "7d",
    "ONBOARDING_CRM_URL": None,
}


class OnboardUser(Schema):
    """Who signed up: ``{"email", "name"?, "loginUrl"?}``."""

    email = fields.Email(required=True)
    name = Text(load_default=None)  # the same rules as the welcome email's greeting
    login_url = fields.Url(data_key="loginUrl", load_default=None, schemes={"http", "https"})


def upgraded_event(email: str) -> str:
    """Return the id of the event that says ``email`` upgraded (what the run waits for)."""
    return f"user-upgraded:{email.lower()}"


def settings() -> dict[str, Any]:
    """Return the onboarding settings of the current app."""
    return {name: current_app.config.get(name, default) for name, default in SETTINGS.items()}


def email(user: dict[str, Any], template: str, **data: Any) -> dict[str, Any]:
    """Return a send-email payload for ``user`` (fields that are None left out)."""
    data["name"] = user["name"]
    present = {key: value for key, value in data.items() if value is not None}
    return {"to": user["email"], "template": template, "data": present}


def send(ctx: Context, step: str, payload: dict[str, Any]) -> str:
    """Publish ``payload`` to the send-email job as step ``step``; return the message id.

    A step runs again only when its delivery failed after the publish and before the
    step was recorded (a killed worker, a publish whose answer was lost). The retry comes
    within minutes (a killed worker's once the run's lease, ``DUPLICATE_LEASE_SECONDS``,
    has run out) and publishes with the same deduplication id, which QStash drops inside
    its 10-minute window. The send-email job then sends once per message id (Resend's
    idempotency key, the outbox's file name).
    """
    return str(ctx.run(step, send_email.enqueue, payload, deduplication_id=f"{ctx.run_id}.{step}"))


@workflow("onboard-user", schema=OnboardUser)
def onboard_user(ctx: Context, user: dict[str, Any]) -> dict[str, Any]:
    """Welcome a new user, follow up unless they upgrade, tell the CRM."""
    # In a step: a deploy may change the settings while the run sleeps, and a replay must
    # take the same branch (CRM or not) as the delivery that first got there.
    config = ctx.run("settings", settings)
    send(ctx, "welcome-email", email(user, "welcome", loginUrl=user["login_url"]))
    ctx.sleep("quiet-period", config["ONBOARDING_QUIET_PERIOD"])
    upgrade = ctx.wait_for_event(
        "upgraded", upgraded_event(user["email"]), timeout=config["ONBOARDING_UPGRADE_WINDOW"]
    )
    follow_up = None
    if upgrade is None:  # the window passed without an upgrade
        payload = email(
            user, "subscription_ending", planName="free trial", renewUrl=user["login_url"]
        )
        follow_up = send(ctx, "follow-up-email", payload)
    crm_status = None
    if config["ONBOARDING_CRM_URL"]:
        # ctx.call records the CRM's answer, whatever its status; a connection error retries
        # the step. The key lets a CRM drop the second request of a step that ran again.
        answer = ctx.call(
            "tell-crm",
            config["ONBOARDING_CRM_URL"],
            body={"email": user["email"], "upgraded": upgrade is not None, "upgrade": upgrade},
            headers={"Idempotency-Key": f"{ctx.run_id}.tell-crm"},
        )
        crm_status = answer["status"]
    return {"upgraded": upgrade is not None, "followUp": follow_up, "crmStatus": crm_status}
