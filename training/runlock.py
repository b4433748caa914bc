"""One training process per run folder: ``RUN/.lock`` holds the owner's PID and host.

Why: two trainings on one ``--out`` interleave ``metrics.jsonl`` and overwrite each other's checkpoints. A lock left
by a process that no longer runs on this host (kill -9, power loss) is taken over with a warning; one written on
another host cannot be checked from here and is reported with how to clear it.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class RunLockError(ValueError):
    """The run folder is in use by another training (a ValueError: the CLI prints one line and exits 2)."""


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs on this host. Unknown counts as alive: refusing is safe, stealing a live lock is not."""
    if pid <= 0:
        return False
    if os.name == "nt":  # os.kill(pid, 0) sends CTRL_C_EVENT on Windows; no cheap portable probe there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: it exists, owned by another user
        return True
    return True


class RunLock:
    """``acquire()`` / ``release()`` the lock of a run folder; re-entrant per instance, released at interpreter exit."""

    def __init__(self, run: str | Path) -> None:
        self.path = Path(run) / LOCK_NAME
        self.token = uuid.uuid4().hex  # tells this lock apart from another one in the same process
        self.held = False

    def acquire(self) -> None:
        """Take the lock, taking over a stale one; :class:`RunLockError` if another live process holds it."""
        if self.held:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "token": self.token,
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        for _ in range(5):
            if self._create(mine):
                self.held = True
                atexit.register(self.release)
                return
            owner = self._read()
            if owner is None:  # removed between our create and read: try again
                continue
            if not self._stale(owner):
                raise RunLockError(self._busy_message(owner))
            logger.warning(
                "taking over the stale lock %s: PID %s on %s no longer runs (a killed run?)",
                self.path,
                owner.get("pid"),
                owner.get("host"),
            )
            if self._read() == owner:  # not replaced meanwhile by a run that took it over first
                self.path.unlink(missing_ok=True)
        raise RunLockError(f"could not take the lock {self.path}: other processes keep taking it")

    def release(self) -> None:
        """Remove the lock if it is still ours (a no-op otherwise)."""
        if not self.held:
            return
        self.held = False
        atexit.unregister(self.release)
        owner = self._read()
        if owner is not None and owner.get("token") == self.token:
            with contextlib.suppress(OSError):
                self.path.unlink()

    # -- helpers -----------------------------------------------------------------------------------------
    def _create(self, info: dict[str, Any]) -> bool:
        """Create the lock file with its full content in one step (hard link of a written temp file)."""
        tmp = self.path.with_name(f"{LOCK_NAME}.{self.token}.tmp")
        tmp.write_text(json.dumps(info) + "\n", encoding="utf-8")
        try:
            os.link(tmp, self.path)
            return True
        except FileExistsError:
            return False
        except OSError:  # file systems without hard links: exclusive create, then write
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(json.dumps(info) + "\n")
            return True
        finally:
            tmp.unlink(missing_ok=True)

    def _read(self) -> dict[str, Any] | None:
        """The lock's content; ``{}`` when unreadable (treated as stale), None when the file is gone."""
        try:
            doc = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}
        return doc if isinstance(doc, dict) else {}

    @staticmethod
    def _stale(owner: dict[str, Any]) -> bool:
        if "pid" not in owner or "host" not in owner:
            return True  # damaged lock file: no owner to wait for
        if owner["host"] != socket.gethostname():
            return False  # cannot check a process on another machine
        try:
            return not pid_alive(int(owner["pid"]))
        except (TypeError, ValueError):
            return True

    def _busy_message(self, owner: dict[str, Any]) -> str:
        run = self.path.parent
        where = "" if owner["host"] == socket.gethostname() else " (another host: this machine cannot check it)"
        return (
            f"run folder {run} is in use by another training: PID {owner['pid']} on host {owner['host']}{where}, "
            f"started {owner.get('started', '?')}. Wait for it to finish or stop it, or pass another --out; "
            f"if that training no longer runs, delete {self.path}"
        )
