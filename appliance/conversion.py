"""Conversions of stored instances for a receiver, in worker processes within a memory and a time budget.

A C-MOVE/C-GET to a receiver that does not accept the stored transfer syntax, and a WADO-RS request
for another syntax, decode (and maybe re-encode) a received, untrusted instance: a compressed frame
that declares a huge image, or a corrupt codestream, must fail that one instance with a reason and
leave the server, and the other instances, alone. :class:`ConversionService` runs each conversion in
one of a small pool of persistent worker processes (``forkserver`` children: no locks or threads
inherited from the server), with an address-space limit (``RLIMIT_AS``) and a deadline per instance.
A worker that runs past its deadline is killed; one that dies (a codec crash, the kernel's OOM killer)
is replaced; both fail only the conversion it was doing. Several conversions run at once (one per
worker), so a retrieve converts the next instances while the current one is being sent.

The service is built by the composition root (:func:`from_config`, ``appliance.cli``) and shared by
DIMSE retrieve and DICOMweb; :func:`convert_file` is the conversion itself (run in a worker, or in the
calling process where no service is configured).
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import queue
import resource
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from appliance import codecs
from appliance.config import LimitsConfig
from appliance.errors import CodecError, InvalidDataset
from appliance.validate import check_file

LOGGER = logging.getLogger(__name__)

_MB = 1024 * 1024


def convert_file(path: str, target: str) -> bytes:
    """The data set of a stored file converted to ``target`` (no file meta), every UID kept.

    The structure is checked before pydicom decodes it whole (see :func:`appliance.validate.check_file`).

    Raises
    ------
    CodecError
        When the file cannot be read, checked, decoded or encoded (the reason says which).
    """
    return codecs.convert(_checked(path), target)


def frames_of_file(path: str, numbers: list[int], target: str) -> tuple[str, list[bytes]]:
    """Frames of a stored file converted to ``target`` (:func:`appliance.codecs.frames`), structure checked first.

    Raises
    ------
    CodecError
        As :func:`convert_file`, or when a frame number is out of range.
    """
    return codecs.frames(_checked(path), numbers, target)


def _checked(path: str) -> bytes:
    """The stored file's bytes once its structure passed :func:`appliance.validate.check_file` (CodecError if not)."""
    try:
        check_file(Path(path))
    except (InvalidDataset, OSError) as exc:
        raise CodecError(f"instance cannot be converted: {exc}") from exc
    return codecs.read_stored(Path(path))


def _serve(conn: multiprocessing.connection.Connection) -> None:
    """A worker: run ``(func, args, memory)`` tasks from ``conn`` until it closes."""
    # Ctrl-C at the terminal reaches the whole process group: the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    while True:
        try:
            func, args, memory = conn.recv()
        except (EOFError, OSError):
            return
        limit = memory if hard == resource.RLIM_INFINITY else min(memory, hard)
        try:
            resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
            try:
                result = func(*args)
            finally:
                resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
        except MemoryError:
            reply: tuple[str, Any] = ("memory", "")
        except CodecError as exc:  # codecs wraps whatever a plugin raised, MemoryError included
            reply = ("memory", "") if isinstance(exc.__cause__, MemoryError) else ("codec", str(exc))
        except Exception as exc:  # re-raised in the server as a CodecError: keep only its text
            reply = ("error", f"{type(exc).__name__}: {exc}")
        else:
            if isinstance(result, bytes | bytearray | memoryview):
                conn.send(("bytes", None))
                conn.send_bytes(result)  # no pickling copy of a large data set
                continue
            reply = ("ok", result)
        try:
            conn.send(reply)
        except MemoryError:
            conn.send(("memory", ""))
        except Exception as exc:  # a result that cannot be pickled: say so rather than end the worker
            conn.send(("error", f"the result cannot be returned: {type(exc).__name__}: {exc}"))


def _ready() -> bool:
    """A task that only makes a new worker import this module (pydicom, numpy, the codecs) ahead of use."""
    return True


class _Worker:
    """One worker process and its end of the pipe."""

    def __init__(self, context: Any) -> None:
        here, there = context.Pipe()
        self.process: BaseProcess = context.Process(
            target=_serve, args=(there,), name="appliance-conversion", daemon=True
        )
        self.process.start()
        there.close()
        self.conn: multiprocessing.connection.Connection = here

    def run(self, func: Callable[..., Any], args: tuple[Any, ...], memory: int, seconds: float, what: str) -> Any:
        """Run one task; raises :class:`CodecError` (and leaves the worker unusable: :meth:`alive`) on failure."""
        try:
            self.conn.send((func, args, memory))
        except OSError as exc:  # the worker ended while idle
            self.stop()
            raise CodecError(f"{what}: the conversion worker had stopped ({exc.strerror or exc})") from None
        if not self.conn.poll(seconds):
            self.stop()
            raise CodecError(f"{what} took longer than {seconds:g} s and was stopped")
        try:
            kind, value = self.conn.recv()
            if kind == "bytes":
                return self.conn.recv_bytes()
        except (EOFError, OSError):
            self.stop()
            code = self.process.exitcode
            how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
            raise CodecError(f"{what} stopped its worker process ({how})") from None
        if kind == "memory":
            raise CodecError(f"{what} needed more than {memory // _MB} MB of memory")
        if kind in ("codec", "error"):
            raise CodecError(value)
        return value

    def alive(self) -> bool:
        return self.process.is_alive() and not self.conn.closed

    def stop(self) -> None:
        """Kill the process (a task may be running in it) and close the pipe."""
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        with contextlib.suppress(OSError):
            self.conn.close()


class ConversionService:
    """A pool of worker processes that convert stored instances, each within a memory and a time budget.

    Parameters
    ----------
    workers : int
        How many conversions may run at once (one process each, started when first needed).
    memory_mb : int
        Address space a worker may use for one conversion, in MB (its own libraries included, so keep
        room for pydicom, numpy and the codecs); a larger instance gets a few times its size on top.
    seconds : float
        Time one conversion may take; a larger instance gets more (about 0.6 s per MB).
    """

    def __init__(self, workers: int = 2, memory_mb: int = 2048, seconds: float = 60.0) -> None:
        self.workers = max(1, workers)
        self.memory = memory_mb * _MB
        self.seconds = seconds
        self._context = multiprocessing.get_context("forkserver")
        self._idle: queue.LifoQueue[_Worker | None] = queue.LifoQueue()
        for _ in range(self.workers):
            self._idle.put(None)  # a slot; its process is started by the first task that takes it
        self._threads = ThreadPoolExecutor(self.workers, thread_name_prefix="conversion")
        self._lock = threading.Lock()
        self._closed = False

    def submit(self, path: Path, target: str, what: str) -> Future[bytes]:
        """Start converting the stored file at ``path`` to ``target`` (:func:`convert_file`) in a worker.

        The future's result is the converted data set; its exception a :class:`CodecError` with the
        reason (out of memory or time, a crashed worker, an undecodable file).
        """
        try:
            size_mb = path.stat().st_size // _MB
        except OSError:
            size_mb = 0
        # Converting holds the file, its decoded pixels and the encoded result: a few times the file.
        memory = self.memory + 4 * size_mb * _MB
        seconds = self.seconds + 0.6 * size_mb
        return self.call(convert_file, str(path), target, what=what, memory=memory, seconds=seconds)

    def call(
        self, func: Callable[..., Any], *args: Any, what: str, memory: int | None = None, seconds: float | None = None
    ) -> Future[Any]:
        """Run ``func(*args)`` (a module-level function, pickled by name) in a worker within the budget.

        Parameters
        ----------
        func, *args
            The task.
        what : str
            Words for the error message ("converting instance 1.2.3").
        memory : int, optional
            Address space for this task in bytes (default: the service's).
        seconds : float, optional
            Time for this task (default: the service's).

        Returns
        -------
        Future
            Its result is ``func``'s; its exception a :class:`CodecError` saying why it failed.
        """
        with self._lock:
            if self._closed:
                raise CodecError("the conversion service has stopped")
            return self._threads.submit(
                self._run, func, args, memory or self.memory, seconds if seconds is not None else self.seconds, what
            )

    def start(self) -> None:
        """Start every worker now, in the background, so the first retrieve does not wait for its imports."""
        for _ in range(self.workers):
            self.call(_ready, what="starting a conversion worker")

    def convert(self, path: Path, target: str, what: str) -> bytes:
        """:meth:`submit` and wait for the result.

        Raises
        ------
        CodecError
            As the future of :meth:`submit`.
        """
        return self.submit(path, target, what).result()

    def _run(self, func: Callable[..., Any], args: tuple[Any, ...], memory: int, seconds: float, what: str) -> Any:
        worker = self._idle.get()
        try:
            if worker is None or not worker.alive():
                worker = _Worker(self._context)
            try:
                return worker.run(func, args, memory, seconds, what)
            finally:
                if not worker.alive():
                    worker = None  # replaced by the next task that takes this slot
        finally:
            if self._closed and worker is not None:
                worker.stop()
                worker = None
            self._idle.put(worker)

    def close(self) -> None:
        """Stop the worker processes (conversions still waiting fail)."""
        with self._lock:
            self._closed = True
        self._threads.shutdown(wait=False, cancel_futures=True)
        while True:
            try:
                worker = self._idle.get_nowait()
            except queue.Empty:
                break
            if worker is not None:
                worker.stop()

    def pids(self) -> list[int]:
        """The process ids of the running workers (for tests and diagnosis)."""
        with self._idle.mutex:
            return [
                w.process.pid for w in self._idle.queue if w is not None and w.process.pid is not None and w.alive()
            ]


def convert(service: ConversionService | None, path: Path, target: str, what: str) -> bytes:
    """Convert a stored file with ``service``, or in this process (without a budget) when there is none.

    Raises
    ------
    CodecError
        As :meth:`ConversionService.submit`'s future.
    """
    if service is not None:
        return service.convert(path, target, what)
    return convert_file(str(path), target)


def frames(
    service: ConversionService | None, path: Path, numbers: list[int], target: str, what: str
) -> tuple[str, list[bytes]]:
    """:func:`frames_of_file` with ``service`` (in this process, without a budget, when there is none).

    Raises
    ------
    CodecError
        As :meth:`ConversionService.submit`'s future, or when a frame number is out of range.
    """
    if service is None:
        return frames_of_file(str(path), numbers, target)
    result: tuple[str, list[bytes]] = service.call(frames_of_file, str(path), numbers, target, what=what).result()
    return result


def from_config(limits: LimitsConfig) -> ConversionService:
    """The service of the ``[limits]`` settings (``conversion_workers``, ``conversion_memory_mb``,
    ``conversion_seconds``)."""
    workers = limits.conversion_workers or min(2, os.cpu_count() or 1)
    return ConversionService(workers, limits.conversion_memory_mb, limits.conversion_seconds)
