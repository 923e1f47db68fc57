"""initdb and postgres refuse to run as root, and we are root in containers and CI.

As root, the Postgres binaries run as a system user (`darkroom`, created if missing, else
`nobody`) that owns the data directory and can reach the binaries.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.devenv.lifecycle import Log

SERVICE_USER = "darkroom"
FALLBACK_USER = "nobody"
_USERADD_USER_EXISTS = 9


@dataclass(frozen=True)
class Account:
    name: str
    uid: int
    gid: int

    def popen_options(self) -> dict[str, Any]:
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def popen_options(account: Account | None) -> dict[str, Any]:
    return {} if account is None else account.popen_options()


def _useradd() -> str | None:
    return shutil.which("useradd") or next(
        (p for p in ("/usr/sbin/useradd", "/sbin/useradd") if Path(p).exists()), None
    )


def _create_service_user(log: Log) -> bool:
    useradd = _useradd()
    if useradd is None:
        return False
    result = subprocess.run(
        [
            useradd,
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            SERVICE_USER,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode not in (0, _USERADD_USER_EXISTS):
        log(f"could not create system user {SERVICE_USER!r}: {result.stderr.strip()}")
        return False
    log(f"created system user {SERVICE_USER!r} to run Postgres (it refuses to run as root)")
    return True


def postgres_account(log: Log) -> Account | None:
    """The account to run Postgres as, or None when we are not root and run it ourselves."""
    if os.geteuid() != 0:
        return None
    for name in (SERVICE_USER, FALLBACK_USER):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            if name == SERVICE_USER and _create_service_user(log):
                entry = pwd.getpwnam(name)
            else:
                continue
        return Account(name=name, uid=entry.pw_uid, gid=entry.pw_gid)
    raise RuntimeError(f"running as root and neither {SERVICE_USER!r} nor {FALLBACK_USER!r} exists")


def make_reachable(path: Path, log: Log) -> None:
    """Let other users traverse every directory down to path (o+x only: no listing)."""
    for directory in [path, *path.parents]:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)
            log(f"allowed other users to traverse {directory} (for the Postgres user)")


def hand_over(path: Path, account: Account) -> None:
    """Give the whole tree to account; a no-op when it already owns the top directory."""
    if path.stat().st_uid == account.uid:
        return
    os.chown(path, account.uid, account.gid)
    for root, directories, files in os.walk(path):
        for name in [*directories, *files]:
            os.chown(os.path.join(root, name), account.uid, account.gid, follow_symlinks=False)
