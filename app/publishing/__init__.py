"""Publishing from a Flask app: the framework side of the QStash client.

``app.qstash.client.QStash`` speaks QStash's REST API and knows nothing of Flask; this
package ties it to an app and its jobs:

| module   | what lives there                                                          |
|----------|---------------------------------------------------------------------------|
| ``client``  | one client per app from its config (``client_for``), ``Publisher``     |
| ``jobs``    | ``Job`` → ``Message``: destination, the job's defaults, validation     |
| ``sync``    | schedules and queues as code (``flask qstash sync``)                   |

Job authors rarely import it: ``Job.enqueue`` / ``enqueue_many`` / ``schedule_at`` call in.
"""

from __future__ import annotations

from app.publishing.client import Publisher, client_for, current_publisher, publisher_for

__all__ = ["Publisher", "client_for", "current_publisher", "publisher_for"]
