"""A station's pool of workers: SimPy's ``Resource`` semantics with fewer events.

Every leg of every payment takes a worker and gives it back. ``simpy.Resource`` schedules an event
for each request (even one granted at once, which nobody waits for) and one for each release, and
walks its queue through generic put/get machinery. :class:`Workers` keeps the same rules and the
same order of events, exactly:

- a request is granted at once when no one is queued and a worker is free; otherwise it queues
  (FIFO) and, if a worker is free, the *oldest* queued request is granted (``Resource._trigger_put``
  grants at most one, oldest first);
- a release frees the worker at once, and hands it to the oldest queued request when the release is
  processed by the event loop (SimPy's ``Release`` event runs ``_trigger_put`` as its callback), so
  a request made at the same instant, before that, still sees the state SimPy would show it;
- a queued request can be cancelled (a caller's timeout) and leaves the queue.

What goes: the event of a request granted at once (it had no callbacks) and, for a release, the
``Release`` object (its scheduled event stays, as a plain event with the hand-over as its callback).
The relative order of all remaining events is unchanged, so a run gives the same results as with
``simpy.Resource`` (the results database of ``cryptocity_day`` is identical row for row).
"""

from __future__ import annotations

from collections import deque

import simpy
from simpy.events import Event

__all__ = ["Workers"]


class Workers:
    """``capacity`` identical workers and a FIFO queue of waiting requests."""

    __slots__ = ("_env", "_grant", "capacity", "count", "queue")

    def __init__(self, env: simpy.Environment, capacity: int) -> None:
        if capacity <= 0:
            raise ValueError("capacity must be > 0")
        self._env = env
        self.capacity = capacity
        self.count = 0  # workers in service
        self.queue: deque[Event] = deque()  # requests waiting, oldest first (never triggered)
        self._grant = self._hand_over  # one bound method, appended to every release event

    def request(self) -> Event | None:
        """Take a worker: ``None`` when one was free (it is now taken), else the event that fires
        when one is handed over."""
        queue = self.queue
        if not queue and self.count < self.capacity:
            self.count += 1
            return None
        waiter = Event(self._env)
        queue.append(waiter)
        if self.count < self.capacity:  # a release not yet processed left a worker free
            self._hand_over(None)
        return waiter

    def cancel(self, waiter: Event) -> None:
        """Stop waiting (a caller's timeout); nothing happens if the worker was already handed over."""
        if not waiter.triggered:
            self.queue.remove(waiter)

    def release(self) -> None:
        """Give a worker back; the oldest waiting request gets it when the loop processes the release."""
        self.count -= 1
        done = Event(self._env)
        done.callbacks.append(self._grant)
        done._ok = True
        done._value = None
        self._env.schedule(done)

    def _hand_over(self, _event: Event | None) -> None:
        if self.queue and self.count < self.capacity:
            self.count += 1
            self.queue.popleft().succeed()
