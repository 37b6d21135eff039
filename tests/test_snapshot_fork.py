"""The pickling of a snapshot in a forked child (services/api/parties/snapshots.py, dump_state_forked).

What the child pickles is the state at the call, not what the parent changes afterwards; an
object that does not pickle fails in the parent with the child's reason; and the child holds none
of the parent's descriptors while it pickles (a listening socket kept open by it would hold the
port of a killed parent from its restart).
"""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

import pytest

from services.api.parties.snapshots import dump_state_forked, load_state

pytestmark = pytest.mark.skipif(not hasattr(os, "fork") or not os.path.isdir("/proc/self/fd"),
                                reason="needs fork and /proc/self/fd")


def _open_descriptors() -> list[str]:
    """What each descriptor open in this process refers to (``socket:[…]``, ``pipe:[…]``, a path)."""
    found = []
    for fd in sorted(int(fd) for fd in os.listdir("/proc/self/fd")):
        try:
            found.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:  # the directory listdir had open, closed since
            continue
    return found


class _OpenDescriptors:
    """Pickles as the descriptors open in the process that pickles it (the child)."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (list, (_open_descriptors(),))


def test_the_child_pickles_the_state_of_the_call_and_holds_no_descriptor_of_the_parent() -> None:
    service = object()
    state = {"cards": {"c1": [1, 2]}, "owner": service, "fds": _OpenDescriptors()}
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        assert any(target.startswith("socket:") for target in _open_descriptors())
        pickled = dump_state_forked(state, {"service": service})
        state["cards"]["c1"].append(3)  # after the fork: not in the snapshot
        got = load_state(pickled(), {"service": service})
    assert got["cards"] == {"c1": [1, 2]} and got["owner"] is service
    # stdin, stdout and stderr on /dev/null, and the pipe back to the parent: nothing else
    assert got["fds"] == [os.devnull] * 3 + [got["fds"][3]] and got["fds"][3].startswith("pipe:"), got["fds"]


def test_a_state_that_does_not_pickle_fails_in_the_parent_with_the_childs_reason() -> None:
    pickled = dump_state_forked({"lock": threading.Lock()}, {})
    with pytest.raises(RuntimeError, match=r"forked child.*lock"):
        pickled()
