"""with_qstash: how each handler outcome becomes a status QStash understands."""

from __future__ import annotations

from app.testing import DeliveryClient
from tests.conftest import Calls


def test_returned_value_is_200_json(client: DeliveryClient, calls: Calls) -> None:
    """A handler's return value is answered as 200 with its JSON."""
    response = client.deliver("resize", {"fileKey": "a.jpg", "targetWidth": 320}, retried=2)
    assert response.status_code == 200
    assert response.get_json() == {"width": 320, "attempt": 3}
    assert calls.items[0][1] == {"file_key": "a.jpg", "target_width": 320}
