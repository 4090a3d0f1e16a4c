"""Heavy work on received data in a child process, within a memory and a time budget.

Received instances are untrusted: a decode or re-encode that a crafted one turns into gigabytes or
an endless loop must fail that one step with a reason, not take the appliance down with it (a
thread cannot be stopped from outside, and a process past its memory is killed whole). The work
runs in one worker process (a ``forkserver`` child: no locks or threads inherited from the server),
with an address-space limit (``RLIMIT_AS``) for each task and a deadline after which the worker is
killed and a new one started for the next task.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.pool
import resource
import threading
from collections.abc import Callable
from typing import Any

from appliance.errors import ApplianceError


class BudgetExceeded(ApplianceError):
    """A task needed more memory or time than its budget; the worker was stopped."""


def _limited(memory: int, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """In the worker: run ``func`` with the address space limited to ``memory`` bytes."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
    resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    try:
        return func(*args)
    except MemoryError:
        raise
    except Exception as exc:  # re-raised in the caller: keep it picklable whatever it was
        raise RuntimeError(f"{type(exc).__name__}: {exc}") from None
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


class Budget:
    """Runs functions in a worker process, each within a memory and a time budget.

    Parameters
    ----------
    memory_mb : int
        Address space the worker may use during a task, in MB (``RLIMIT_AS``: its own libraries
        included, so keep room for pydicom, numpy and the codecs).
    seconds : float
        Time a task may take.
    preload : list of str
        Modules the worker imports once (the functions' modules), so that a task does not pay for it.
    """

    def __init__(self, memory_mb: int = 2048, seconds: float = 120.0, preload: tuple[str, ...] = ()) -> None:
        self.memory = memory_mb * 1024 * 1024
        self.seconds = seconds
        self.preload = list(preload)
        self._lock = threading.Lock()
        self._pool: multiprocessing.pool.Pool | None = None

    def run(
        self,
        func: Callable[..., Any],
        *args: Any,
        what: str = "the task",
        extra_mb: int = 0,
        seconds: float | None = None,
    ) -> Any:
        """Run ``func(*args)`` in the worker and return its result.

        Parameters
        ----------
        func : callable
            A module-level function (it is pickled by name).
        *args
            Its arguments (pickled).
        what : str
            Words for the error message ("converting instance 1.2.3").
        extra_mb : int
            Memory beyond :attr:`memory` for this task (e.g. a few times the size of its input).
        seconds : float, optional
            This task's time budget instead of the default.

        Raises
        ------
        BudgetExceeded
            Out of memory or time (the worker is replaced).
        RuntimeError
            ``func`` raised: the message carries the original exception's type and text.
        """
        limit = seconds if seconds is not None else self.seconds
        with self._lock:  # one task at a time: the worker is one process
            pool = self._start()
            pending = pool.apply_async(_limited, (self.memory + extra_mb * 1024 * 1024, func, args))
            try:
                return pending.get(limit)
            except multiprocessing.TimeoutError:
                self._stop()
                raise BudgetExceeded(f"{what} took longer than {limit:g} s and was stopped") from None
            except MemoryError:
                raise BudgetExceeded(
                    f"{what} needed more than {(self.memory // 1048576) + extra_mb} MB of memory"
                ) from None

    def close(self) -> None:
        """Stop the worker (it is started again by the next :meth:`run`)."""
        with self._lock:
            self._stop()

    def _start(self) -> multiprocessing.pool.Pool:
        if self._pool is None:
            context = multiprocessing.get_context("forkserver")
            if self.preload:
                context.set_forkserver_preload(self.preload)
            self._pool = context.Pool(1)
        return self._pool

    def _stop(self) -> None:
        if self._pool is not None:
            self._pool.terminate()  # kills a worker stuck in a task
            self._pool.join()
            self._pool = None
