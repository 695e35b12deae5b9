"""One `generate` call's share of a draft: its own round state and statistics, so threads can share a draft.

A draft keeps what its rounds learn between `generate` calls (`draft.round_state`: the planners, the
suffix memory, the recycled-token table) and reports the last call's statistics (`draft.stats`). A web
server may run several calls on one draft at once, from several threads. So each call:

- takes the kept round state for itself while it runs; a call that starts while another holds it gets
  a new one of its own (it learns from nothing, and what it learns is dropped at its end: the kept state
  is only ever written by one call at a time);
- records its rounds into statistics of its own, merged into `draft.stats` under the draft's lock when
  it ends. `draft.stats` is reset when a call starts while no other call runs, so after sequential calls
  it holds the last call's rounds, and after overlapping calls all of theirs.

Output never depends on any of this (the candidates only change the speed, the target decides every
token), so concurrent calls give exactly what the same calls give one after another.

`draft_call(draft)` brackets a call (the hook on `generate` opens it); inside it `current_call(draft)`
is that call. Outside any bracket (a candidate generator made by hand), `current_call` gives a call that
uses the kept state and `draft.stats` directly, as a single caller would.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterator
from typing import Any

from ..stats import DraftStats

__all__ = ["DraftCall", "current_call", "draft_call"]

_CURRENT: contextvars.ContextVar[DraftCall | None] = contextvars.ContextVar("sdfp_draft_call", default=None)
_LOCKS_LOCK = threading.Lock()


def _lock_of(draft: Any) -> threading.Lock:
    """The draft's lock (made once, under a module lock, so two threads never make two)."""
    lock = draft.__dict__.get("_sdfp_lock")
    if lock is None:
        with _LOCKS_LOCK:
            lock = draft.__dict__.setdefault("_sdfp_lock", threading.Lock())
    return lock


class DraftCall:
    """One `generate` call on a draft: the round state it holds and the statistics it records.

    Args:
        draft: the draft (`SelfDraft`).
        bracketed (`bool`): inside `draft_call` (own statistics, round state checked out) or not (the
            draft's own statistics and kept state, used directly).
    """

    def __init__(self, draft: Any, bracketed: bool):
        self.draft = draft
        self.bracketed = bracketed
        self.stats = DraftStats() if bracketed else draft.stats
        if not bracketed:
            self.stats.reset()  # a direct call is a new call
        self._held: list[str] = []

    def state(self, key: str, settings: Any, make: Callable[[], Any]) -> Any:
        """The round state `key` for this call: the draft's kept one if free, else a new one of this call's own.

        A kept state made for other `settings` (options, dtype, device) is replaced by a new one.
        """
        lock = _lock_of(self.draft)
        with lock:
            kept = self.draft.round_state.get(key)
            if kept is None or kept[0] != settings:
                kept = (settings, make())
                self.draft.round_state[key] = kept
            if not self.bracketed or key in self._held:
                return kept[1]
            busy = self.draft.__dict__.setdefault("_sdfp_busy", {})
            if busy.get(key) is kept[1]:
                return make()  # another call holds it: learn apart, leave the kept one to that call
            busy[key] = kept[1]
            self._held.append(key)
            return kept[1]

    def _release(self) -> None:
        busy = self.draft.__dict__.get("_sdfp_busy", {})
        for key in self._held:
            busy.pop(key, None)
        self._held.clear()


@contextlib.contextmanager
def draft_call(draft: Any) -> Iterator[DraftCall]:
    """Bracket one `generate` call on `draft` (see the module docstring)."""
    lock = _lock_of(draft)
    with lock:
        active = draft.__dict__.get("_sdfp_active_calls", 0)
        if active == 0:
            draft.stats.reset()
        draft.__dict__["_sdfp_active_calls"] = active + 1
    call = DraftCall(draft, bracketed=True)
    token = _CURRENT.set(call)
    try:
        yield call
    finally:
        _CURRENT.reset(token)
        with lock:
            call._release()
            draft.stats.merge(call.stats)
            draft.__dict__["_sdfp_active_calls"] -= 1


def current_call(draft: Any) -> DraftCall:
    """The call running on `draft` in this thread; outside any `draft_call`, a new direct call (stats reset)."""
    call = _CURRENT.get()
    if call is not None and call.draft is draft:
        return call
    return DraftCall(draft, bracketed=False)
