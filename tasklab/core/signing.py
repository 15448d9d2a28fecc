"""The key of a deployment, and HMAC-SHA256 signatures over what is executed or unpickled.

Anyone who can write to a Redis that tasklab uses could otherwise run code on every worker and in
the notebook's kernel: a job's payload, a code version, a result and an exception are pickles or
source. Each is signed with the deployment's key, and checked before it is used.

The key is a string of at least :data:`MIN_KEY_CHARS` characters (``tasklab secret`` prints a
fresh one). Where it comes from, first found wins (see :func:`find_key`):

1. ``connect(secret=…)``, or ``tasklab worker --secret-file PATH``;
2. ``$TASKLAB_SECRET``;
3. the file ``$TASKLAB_SECRET_FILE``, else ``~/.config/tasklab/secret`` (``$XDG_CONFIG_HOME``);
4. on the embedded server, ``secret`` in its data directory, made at its first start (mode 0600).

A process signs with one key; a second lab with another key, or without one, is refused (the
keyring is the process's, because RQ calls its serializer without saying for which connection).
Without a key, a process may be *insecure* (``insecure=True`` / ``--insecure``): it then signs
nothing and accepts unsigned data, and says so once.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import secrets
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

from .. import defaults
from ..errors import ConfigurationError, DataDirError, SignatureError

#: A signed blob: this prefix, a format byte, a context byte, the MAC of the context and the payload,
#: then the payload. A pickle starts with 0x80, so an unsigned pickle is never taken for a signed blob.
MAGIC = b"\x00tl"
#: The formats: the MAC's first 16 bytes (128 bits, as HMAC-SHA256 is commonly truncated: a stored job
#: keeps its payload and meta signed, 32 bytes less each), written; or all 32, the first format, read.
FORMAT = b"2"
_MAC_SIZES = {FORMAT: 16, b"1": hashlib.sha256().digest_size}
#: Contexts, signed with the payload: what the kernel sends to be run (jobs, code), and what workers
#: send back (results, exceptions). A worker runs a payload of the first kind only, so a value a task
#: returned (shaped by whatever it read) can never be put in as a job to run.
JOB = b"j"
RESULT = b"r"
_HEADER = len(MAGIC) + 2  # and the format and the context
#: The shortest key accepted: 32 characters (``tasklab secret`` prints 43).
MIN_KEY_CHARS = 32


def new_key() -> str:
    """A fresh key: 32 random bytes, URL-safe base64 (43 characters)."""
    return secrets.token_urlsafe(32)


def default_key_file() -> Path:
    """``$TASKLAB_SECRET_FILE``, else ``secret`` under the user's config directory."""
    explicit = os.environ.get(defaults.SECRET_FILE_ENV)
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(config) / "tasklab" / "secret"


def check_key(key: str, where: str) -> bytes:
    """``key`` as bytes, or a :class:`ConfigurationError` saying why it cannot be one."""
    key = key.strip()
    if len(key) < MIN_KEY_CHARS:
        raise ConfigurationError(
            f"The key from {where} is {len(key)} characters; a key needs at least {MIN_KEY_CHARS}. "
            "Make one with `tasklab secret`."
        )
    return key.encode()


def read_key_file(path: Path) -> bytes:
    """The key in ``path``, which only its owner may read."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ConfigurationError(f"Cannot read the key file {path}: {exc.strerror}.") from exc
    if mode & 0o077:
        raise ConfigurationError(
            f"The key file {path} can be read by other users (mode {mode & 0o777:o}); run `chmod 600 {path}`."
        )
    return check_key(text, str(path))


def write_key_file(path: Path, key: str) -> None:
    """Write ``key`` to a new file ``path`` of mode 0600 (its directory made 0700 if new)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(key + "\n")


def find_key(secret: str | None = None, secret_file: str | os.PathLike[str] | None = None) -> bytes | None:
    """The key given (``secret``, ``secret_file``), else ``$TASKLAB_SECRET``, else the default key
    file if it exists; ``None`` if there is none."""
    if secret is not None:
        return check_key(secret, "secret=")
    if secret_file is not None:
        return read_key_file(Path(secret_file).expanduser())
    from_env = os.environ.get(defaults.SECRET_ENV)
    if from_env:
        return check_key(from_env, f"${defaults.SECRET_ENV}")
    path = default_key_file()
    if path.exists():
        return read_key_file(path)
    return None


def embedded_key(data_dir: Path) -> bytes:
    """The key of the embedded server of ``data_dir``: its ``secret`` file, made if missing."""
    path = data_dir / defaults.SECRET_FILE_NAME
    try:
        if not path.exists():
            with contextlib.suppress(FileExistsError):  # another kernel made it at the same moment
                write_key_file(path, new_key())
    except OSError as exc:
        raise DataDirError(
            f"The data directory {data_dir} cannot be written ({exc.strerror}). Pass a writable one: "
            f"tasklab.connect(data_dir='...') or set {defaults.DATA_DIR_ENV}."
        ) from exc
    return read_key_file(path)


class Mac:
    """HMAC-SHA256 under one key, its two padded key blocks hashed once (RFC 2104).

    The MACs are :func:`hmac.digest`'s; each costs two copies of a hash state and no key set-up,
    about half the time for the short blobs a job carries (~2 µs instead of ~4 µs here).
    """

    _BLOCK = hashlib.sha256().block_size

    def __init__(self, key: bytes) -> None:
        if len(key) > self._BLOCK:
            key = hashlib.sha256(key).digest()
        key = key.ljust(self._BLOCK, b"\0")
        self._inner = hashlib.sha256(key.translate(_XOR_36))
        self._outer = hashlib.sha256(key.translate(_XOR_5C))

    def digest(self, *parts: bytes) -> bytes:
        """The MAC of the concatenation of ``parts``."""
        inner = self._inner.copy()
        for part in parts:
            inner.update(part)
        outer = self._outer.copy()
        outer.update(inner.digest())
        return outer.digest()


_XOR_36 = bytes(b ^ 0x36 for b in range(256))
_XOR_5C = bytes(b ^ 0x5C for b in range(256))
#: Blobs of at most this many bytes are remembered once signed or checked: a job's meta is the same
#: for every job of a ``map_async``, and RQ unpickles a payload the worker has just checked.
_REMEMBER_BYTES = 4096
#: The largest blob remembered, once, for its next check: larger ones are checked again rather than kept.
_REMEMBER_LARGE_BYTES = 1 << 20
#: How many signed and checked blobs are remembered (each side, most recently used kept).
_REMEMBERED = 16


class Keyring:
    """The keys of this process: one it signs with, all it accepts; or none, and insecure."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.signing_key: bytes | None = None
        self.accepted: list[bytes] = []
        self.insecure = False
        #: Also accept unsigned data (a worker run with ``--allow-rq-jobs``: plain RQ jobs).
        self.accept_unsigned = False
        self._macs: list[Mac] = []  # one per accepted key, the signing key's first
        #: Blobs signed lately, by context and payload (see :data:`_REMEMBER_BYTES`).
        self._signed: OrderedDict[tuple[bytes, bytes], bytes] = OrderedDict()
        #: Blobs checked lately, with their context and payload: a worker checks a job's payload and
        #: meta before RQ unpickles them, and RQ's unpickling asks again for the same bytes. The last
        #: large blob is remembered on its own, for its next check only, so that it is not kept.
        self._checked: OrderedDict[bytes, tuple[bytes, bytes]] = OrderedDict()
        self._checked_large: tuple[bytes, bytes, bytes] | None = None

    def use(self, key: bytes | None, *, insecure: bool = False) -> None:
        """Sign with ``key`` from now on, and accept what it signed; with no key and ``insecure``,
        sign nothing and accept what is unsigned. With neither, nothing changes: whatever this
        process is then asked to sign or check raises a :class:`SignatureError` saying why."""
        with self._lock:
            if key is None and not insecure:
                return
            if (key is None and self.signing_key is not None) or (key is not None and self.insecure):
                raise ConfigurationError(
                    "A lab in this process signs with a key, and another would go without one (insecure): "
                    "the process would then accept unsigned data for both. Give both labs the key, or use "
                    "another process for the insecure one."
                )
            if key is not None and self.signing_key not in (None, key):
                raise ConfigurationError(
                    "A lab in this process already signs with another key. One process uses one key: give "
                    "both Redis deployments the same key, or use another process (kernel) for the other one."
                )
            if key is None:
                self.insecure = True
                return
            self.signing_key = key
            if key not in self.accepted:
                self.accepted.append(key)
                self._macs.append(Mac(key))

    def ready(self) -> bool:
        """Whether this process was given a key, or told to go without."""
        return self.signing_key is not None or self.insecure

    def sign(self, payload: bytes, context: bytes = JOB) -> bytes:
        """``payload`` signed for ``context`` (:data:`JOB` or :data:`RESULT`)."""
        if self.signing_key is None:
            if self.insecure:
                return payload
            raise SignatureError(_NO_KEY)
        small = len(payload) <= _REMEMBER_BYTES
        if small:
            blob = _recall(self._signed, (context, payload))
            if blob is not None:
                return blob
        blob = b"".join((MAGIC, FORMAT, context, self._macs[0].digest(context, payload)[: _MAC_SIZES[FORMAT]], payload))
        if small:
            _remember(self._signed, (context, payload), blob)
        return blob

    def unsign(self, blob: bytes, what: str, contexts: bytes = JOB + RESULT) -> bytes:
        """The payload of ``blob`` if a key of this process signed it for one of ``contexts``; else
        :class:`SignatureError` naming ``what`` (unsigned data passes in an insecure process, or one
        accepting RQ's jobs)."""
        blob = bytes(blob)
        if not blob.startswith(MAGIC):
            if self.insecure or self.accept_unsigned:
                return blob
            raise SignatureError(
                f"Refused {what}: it carries no tasklab signature, so anyone who can write to this Redis could "
                "have put it there. It was not unpickled."
            )
        small = len(blob) <= _REMEMBER_BYTES
        checked = _recall(self._checked, blob) if small else self._checked_large_of(blob)
        if checked is not None and checked[0] in contexts:
            return checked[1]
        size = _MAC_SIZES.get(blob[len(MAGIC) : len(MAGIC) + 1])
        if size is None:
            raise SignatureError(
                f"Refused {what}: it is signed in a format this tasklab does not know (written by a newer one?). It "
                "was not unpickled. Run the same tasklab version in the lab and on every worker."
            )
        context, mac, payload = blob[_HEADER - 1 : _HEADER], blob[_HEADER : _HEADER + size], blob[_HEADER + size :]
        if not self._macs and not self.insecure:
            raise SignatureError(_NO_KEY)
        for key in self._macs:
            if hmac.compare_digest(mac, key.digest(context, payload)[:size]):
                if len(context) != 1 or context not in contexts:
                    raise SignatureError(
                        f"Refused {what}: it was signed as {'a result' if context == RESULT else 'something else'}, "
                        "not as what it is used for here (a signed value put where a job goes). It was not unpickled."
                    )
                if small:
                    _remember(self._checked, blob, (context, payload))
                elif len(blob) <= _REMEMBER_LARGE_BYTES:
                    self._checked_large = (blob, context, payload)
                return payload
        raise SignatureError(
            f"Refused {what}: its signature does not match this deployment's key (it was signed with another "
            "key, or changed). It was not unpickled. Give the lab and every worker the same key."
        )

    def _checked_large_of(self, blob: bytes) -> tuple[bytes, bytes] | None:
        """The large blob checked last, if it is ``blob``: used once (RQ unpickles what a worker has just
        checked), then forgotten, so that a large result is not kept after its reader dropped it."""
        last, self._checked_large = self._checked_large, None
        return (last[1], last[2]) if last is not None and last[0] == blob else None

    def mac(self, payload: bytes) -> str:
        """The hex MAC of ``payload`` with the signing key ('' when insecure)."""
        key = self.signing_key
        if key is None:
            if self.insecure:
                return ""
            raise SignatureError(_NO_KEY)
        return self._macs[0].digest(payload).hex()

    def check_mac(self, payload: bytes, mac: str, what: str) -> None:
        """Raise :class:`SignatureError` unless ``mac`` is the MAC of ``payload`` under an accepted key."""
        if self.insecure and not mac:
            return
        mac = mac.encode("ascii", "replace").decode("ascii")  # compare_digest wants ASCII
        for key in self._macs:
            if hmac.compare_digest(mac, key.digest(payload).hex()):
                return
        raise SignatureError(
            f"Refused {what}: "
            + ("it is unsigned" if not mac else "its signature does not match this deployment's key")
            + "; it was not run. Give the lab and every worker the same key."
        )


def _recall(cache: OrderedDict[Any, Any], key: Any) -> Any:
    """``cache[key]``, now the most recently used; ``None`` if it is not there."""
    value = cache.pop(key, None)
    if value is not None:
        cache[key] = value  # at the end again
    return value


def _remember(cache: OrderedDict[Any, Any], key: Any, value: Any) -> None:
    """Put ``key`` in ``cache``, dropping the least recently used entries past :data:`_REMEMBERED`."""
    cache[key] = value
    if len(cache) > _REMEMBERED:
        try:  # noqa: SIM105  (contextlib.suppress costs about a µs, on each job)
            cache.popitem(last=False)
        except KeyError:  # emptied by another thread meanwhile
            pass


_NO_KEY = (
    "This process has no tasklab key, so it can neither sign nor check what it sends and reads. Connect a lab "
    "first (tasklab.connect()), or set $TASKLAB_SECRET."
)

#: This process's keys: set by the lab when it connects and by a worker when it starts.
keyring = Keyring()
