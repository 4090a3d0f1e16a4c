"""Thumbnails off the request path: render processes that decode pixels, and the pre-render worker.

Why separate processes: the web server is one Python process whose pages need the GIL. Decoding pixel data and
resizing it (pydicom, numpy, PIL) in its request threads took the GIL from the pages: with the thumbnail cache
empty, 50 patients at once made the pages about twice as slow as with the cache full, while the second core was
mostly idle, and renders run side by side in 8 threads cost 1.7 times the CPU of the same renders one after the
other. :class:`RenderPool` runs them in two niced child processes instead: the pages keep the GIL, the renders
use what CPU is left, and a decoder that crashes on a damaged file ends only its child (started again for the
next picture). Viewer images are still rendered in the web threads.

:class:`PrerenderWorker` renders the thumbnails of newly stored series in the background when the association
that stored them ends, so a patient who opens the link finds them ready. It never blocks the DICOM receive path
(a full queue drops the job with a warning: those thumbnails are rendered on first view, as always), skips
thumbnails already cached, logs a failure and goes on with the next series, and keeps nothing across restarts
(nothing is lost by a restart: rendering on demand still works).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from appliance.errors import ApplianceError
from appliance.site.imaging import NO_IMAGE, try_picture

LOGGER = logging.getLogger(__name__)

#: Niceness of the render process: pictures get the CPU that DICOM receiving and the web pages leave over.
RENDER_NICE = 10
#: Render processes: two keep pictures coming while the web threads that wait for them get the GIL back, and
#: leave the rest of a 2-core machine to the appliance (one more made the thumbnails of a cold cache no faster).
RENDER_PROCESSES = 2
#: Seconds one picture may take before the render process is killed and started again.
RENDER_TIMEOUT = 60.0
#: Jobs (one per association that stored images) that may wait for the pre-render worker.
PRERENDER_QUEUE = 1000
#: Seconds between two "queue full" warnings.
_FULL_WARNING_SECONDS = 60.0


class RenderFailed(ApplianceError):
    """The render process died or took too long on a picture (it is started again for the next one)."""


def _send(stream: IO[bytes], *messages: bytes) -> None:
    """Write messages, each one as a 4-byte length and its bytes."""
    stream.write(b"".join(struct.pack("!I", len(m)) + m for m in messages))
    stream.flush()


def _read(stream: IO[bytes], size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("the other end closed the pipe")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _receive(stream: IO[bytes]) -> bytes:
    """Read one message written by :func:`_send`."""
    return _read(stream, struct.unpack("!I", _read(stream, 4))[0])


def _serve(requests: IO[bytes], answers: IO[bytes]) -> None:
    """The render process: answer each ``{"path", "size"}`` request with a header and the JPEG bytes.

    Messages are JSON and raw bytes, never pickles: the child decodes untrusted pixel data, so what it sends
    back must not be able to run code in the appliance.
    """
    while True:
        try:
            job = json.loads(_receive(requests))
        except (EOFError, OSError):
            return  # the appliance has gone
        if job is None:
            return
        data, _, reason = try_picture(Path(job["path"]), int(job["size"]))
        _send(answers, json.dumps({"reason": reason}).encode(), data)


class RenderProcess:
    """Thumbnails rendered in a child process, one at a time (started on first use, again after a crash).

    The child is ``python -m appliance.site.thumbnails`` on a pair of pipes; unlike a ``multiprocessing`` child it
    does not depend on how the appliance itself was started (it imports nothing of the parent's main module).

    Parameters
    ----------
    nice : int
        Niceness added to the child's (0 keeps the appliance's priority).
    timeout : float
        Seconds a picture may take; then the child is killed and :class:`RenderFailed` raised.
    """

    def __init__(self, nice: int = RENDER_NICE, timeout: float = RENDER_TIMEOUT) -> None:
        self.nice = nice
        self.timeout = timeout
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._pipes: tuple[IO[bytes], IO[bytes]] | None = None
        self._closed = False

    @property
    def pid(self) -> int | None:
        """The child's process id, None while it is not running."""
        return self._process.pid if self._process is not None else None

    def _start(self) -> tuple[IO[bytes], IO[bytes]]:
        if self._pipes is not None:
            return self._pipes
        env = dict(os.environ)
        # The child imports this very package, wherever the parent found it.
        package_root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
        process = subprocess.Popen(
            [sys.executable, "-m", "appliance.site.thumbnails", str(self.nice)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            bufsize=0,
            env=env,
            close_fds=True,
        )
        if process.stdin is None or process.stdout is None:  # never: both are PIPE (this is for the type)
            raise RenderFailed("the render process has no pipes")
        pipes = (process.stdin, process.stdout)
        self._process, self._pipes = process, pipes
        LOGGER.debug("render process %s started", process.pid)
        return pipes

    def _stop(self) -> None:
        pipes, process, self._pipes, self._process = self._pipes, self._process, None, None
        if pipes is not None:
            with contextlib.suppress(OSError):
                _send(pipes[0], b"null")
            for pipe in pipes:
                pipe.close()
        if process is not None:
            try:
                process.wait(2)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(2)

    def thumbnail(self, path: Path, size: int) -> tuple[bytes, str]:
        """A JPEG of the first frame of ``path`` fitted into ``size`` pixels.

        Returns
        -------
        tuple
            The JPEG bytes and ``""``, or a placeholder and why the instance has no picture.

        Raises
        ------
        RenderFailed
            The render process died (a decoder crash) or took longer than ``timeout``; or this was closed.
        """
        with self._lock:
            if self._closed:
                raise RenderFailed("the render process is stopped")
            requests, answers = self._start()
            try:
                _send(requests, json.dumps({"path": os.fspath(path), "size": size}).encode())
                ready, _, _ = select.select([answers], [], [], self.timeout)
                if not ready:
                    self._stop()
                    raise RenderFailed(f"rendering {path.name} took over {self.timeout:g} s: render process restarted")
                reason = str(json.loads(_receive(answers))["reason"])
                data = _receive(answers)
            except (EOFError, OSError, ValueError, KeyError, TypeError):
                code = None
                if self._process is not None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        code = self._process.wait(1)
                self._stop()
                raise RenderFailed(f"the render process ended while rendering {path.name} (exit code {code})") from None
        return data, reason

    def close(self) -> None:
        """Stop the child (a picture being rendered is given up)."""
        self._closed = True
        if self._lock.acquire(timeout=5):
            try:
                self._stop()
            finally:
                self._lock.release()
        elif self._process is not None:
            self._process.kill()  # a picture is stuck: its thread gets RenderFailed


class RenderPool:
    """A few :class:`RenderProcess` children; each picture goes to the first idle one.

    Parameters
    ----------
    processes : int
        How many children (each started on first use).
    nice, timeout
        As for :class:`RenderProcess`.
    """

    def __init__(
        self, processes: int = RENDER_PROCESSES, nice: int = RENDER_NICE, timeout: float = RENDER_TIMEOUT
    ) -> None:
        self.processes = [RenderProcess(nice, timeout) for _ in range(max(1, processes))]
        self._idle: queue.SimpleQueue[RenderProcess] = queue.SimpleQueue()
        for child in self.processes:
            self._idle.put(child)

    def thumbnail(self, path: Path, size: int) -> tuple[bytes, str]:
        """As :meth:`RenderProcess.thumbnail`, in the first idle child (waiting for one when all are busy)."""
        child = self._idle.get()
        try:
            return child.thumbnail(path, size)
        finally:
            self._idle.put(child)

    def close(self) -> None:
        """Stop every child."""
        for child in self.processes:
            child.close()


def log_placeholder(name: str, reason: str) -> None:
    """Log why an instance got a placeholder: a warning when its pixels could not be decoded."""
    if reason == NO_IMAGE:
        LOGGER.info("no picture for %s: %s", name, reason)
    else:
        LOGGER.warning("no picture for %s, a placeholder is shown: %s", name, reason)


@dataclass(frozen=True)
class _Job:
    instances: tuple[str, ...] = ()
    series: tuple[str, ...] = ()


class PrerenderWorker:
    """One background thread that renders the thumbnails of newly stored series.

    Parameters
    ----------
    series_of : callable
        ``series_of(sop_uids)``: the UIDs of the stored series these instances belong to.
    prerender : callable
        ``prerender(series_uid)``: cache the series' thumbnail; True when it was rendered, False when it was
        cached already or the series is gone.
    max_jobs : int
        Jobs that may wait; more are dropped (with a warning at most once a minute).
    """

    def __init__(
        self,
        series_of: Callable[[list[str]], list[str]],
        prerender: Callable[[str], bool],
        max_jobs: int = PRERENDER_QUEUE,
    ) -> None:
        self.series_of = series_of
        self.prerender = prerender
        self._queue: queue.Queue[_Job | None] = queue.Queue(max_jobs)
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._pending = 0
        self._closed = False
        self._last_full_warning = -_FULL_WARNING_SECONDS
        #: Thumbnails rendered, found cached, and failed since the start.
        self.rendered = self.skipped = self.failed = 0

    @property
    def pending(self) -> int:
        """Jobs queued or being worked on."""
        with self._lock:
            return self._pending

    def submit_instances(self, sop_uids: Iterable[str]) -> bool:
        """Queue the thumbnails of the series of these instances (one association's); False when dropped."""
        return self._submit(_Job(instances=tuple(sop_uids)))

    def submit_series(self, series_uids: Iterable[str]) -> bool:
        """Queue the thumbnails of these series; False when dropped."""
        return self._submit(_Job(series=tuple(series_uids)))

    def _submit(self, job: _Job) -> bool:
        if not job.instances and not job.series:
            return True
        with self._lock:
            if self._closed:
                return False
            try:
                self._queue.put_nowait(job)
            except queue.Full:
                now = time.monotonic()
                if now - self._last_full_warning >= _FULL_WARNING_SECONDS:
                    self._last_full_warning = now
                    LOGGER.warning(
                        "thumbnail pre-render queue full (%d jobs): thumbnails of newly stored series "
                        "are rendered when first viewed",
                        self._queue.maxsize,
                    )
                return False
            self._pending += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="thumbnails", daemon=True)
                self._thread.start()
        return True

    def _run(self) -> None:
        while (job := self._queue.get()) is not None:
            try:
                self._work(job)
            except Exception:  # the index may be busy or gone: these thumbnails render on first view
                LOGGER.exception("thumbnail pre-render job failed")
            finally:
                with self._lock:
                    self._pending -= 1
                    self._idle.notify_all()

    def _work(self, job: _Job) -> None:
        series = list(job.series) + (self.series_of(list(job.instances)) if job.instances else [])
        for uid in dict.fromkeys(series):
            if self._closed:
                return
            try:
                done = self.prerender(uid)
            except Exception as exc:  # a thumbnail that fails now is rendered (or fails) again on first view
                self.failed += 1
                LOGGER.warning("thumbnail of series %s not pre-rendered: %s", uid, exc)
                continue
            if done:
                self.rendered += 1
            else:
                self.skipped += 1

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every queued job is done; False when ``timeout`` seconds passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._pending == 0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Stop after the series being rendered; queued jobs are dropped (they render on first view)."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            while True:
                try:
                    if self._queue.get_nowait() is not None:
                        self._pending -= 1
                except queue.Empty:
                    break
            self._idle.notify_all()
        if thread is not None:
            self._queue.put(None)
            thread.join(timeout)


def main(argv: list[str]) -> int:
    """``python -m appliance.site.thumbnails [nice]``: the render process (requests on stdin, answers on stdout)."""
    nice = int(argv[0]) if argv else 0
    if nice:
        with contextlib.suppress(OSError):  # not allowed here: render at normal priority
            os.nice(nice)
    requests = os.fdopen(os.dup(0), "rb", buffering=0)
    answers = os.fdopen(os.dup(1), "wb", buffering=0)
    # Anything a library prints goes to stderr (the appliance's console), not into the answers.
    os.dup2(2, 1)
    _serve(requests, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
