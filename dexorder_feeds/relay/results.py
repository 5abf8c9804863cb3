"""The finished requests' notifications, kept so a repeated ``request_id`` is answered again
without running the request a second time."""

from __future__ import annotations

from collections import OrderedDict

from ..vocabulary.errors import RelayUnavailableError
from ..wire import Notification
from ..wire.errors import wire_name

__all__ = ["ResultCache", "RESULT_CACHE_SIZE"]

RESULT_CACHE_SIZE = 10_000
_RETRY = wire_name(RelayUnavailableError)


class ResultCache:
    """The notifications of the last ``size`` finished requests, by request id (least recently
    used dropped first; ``size=0`` keeps none).

    A notification that says "retry" (``RelayUnavailableError``, such as the one a request
    queued at shutdown gets) is no result: it is not kept, so the retry runs the request.
    """

    def __init__(self, size: int = RESULT_CACHE_SIZE) -> None:
        self.size = size
        self._by_id: OrderedDict[str, Notification] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_id)

    def __contains__(self, request_id: object) -> bool:
        return request_id in self._by_id

    def remember(self, notification: Notification) -> bool:
        """Keep ``notification`` as its request's result; False if it is a "retry" and was not kept."""
        if notification.error_type == _RETRY:
            return False
        request_id = notification.request_id
        self._by_id[request_id] = notification
        self._by_id.move_to_end(request_id)
        while len(self._by_id) > self.size:
            self._by_id.popitem(last=False)
        return True

    def replay(self, request_id: str, client_id: str) -> Notification | None:
        """A copy of the stored result of ``request_id`` addressed to ``client_id``, or None.

        The stored one stays as it is (a later repeat from another client gets its own copy)
        and counts as just used.
        """
        stored = self._by_id.get(request_id)
        if stored is None:
            return None
        self._by_id.move_to_end(request_id)
        again = Notification()
        again.CopyFrom(stored)
        again.client_id = client_id
        return again
