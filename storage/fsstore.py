"""Filesystem object store (the embedded default).

Objects are files under ``root``; keys are checked by :func:`validate_key` and the
resolved path must stay inside ``root``, so no key can reach outside it. Writes go to a
temporary file that is renamed into place, so a reader never sees half an object.

Presigned URLs point at the gateway's own HTTP (``{base_url}/objects/{key}``) and carry
``expires`` (Unix seconds on the service's clock, read through the injected ``now``) and
``sig``, an HMAC-SHA256 over the method, key and expiry; :meth:`verify` checks them in
constant time. An upload URL also carries the granted ``bytes`` and ``sha256``, covered by
its signature (:meth:`verify_put`); :meth:`create_verified` streams the body to a
temporary file, counting and hashing, and links it into place only if both match. So
every object a device stored here was checked on the way in: the store's record that an
upload is what was granted is the object's presence under its key, with its size
(:meth:`stat_many`), and nothing is read back to index it (issue 16, item 2).
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import os
import stat
import tempfile
import threading
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from storage.objects import (
    InvalidKey,
    ObjectExists,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    PresignedPut,
    UploadRefused,
    check_upload,
    validate_key,
    validate_prefix,
)


class SignatureError(ObjectStoreError):
    """A presigned URL that is expired, tampered with or malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: An upload's bytes are hashed and written a batch of this many at a time (in a worker
#: thread), so at most about this much of one upload is ever held in memory.
UPLOAD_FLUSH_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class SignedUpload:
    """What an upload URL's signature binds: the body's size and SHA-256 (hex)."""

    size: int
    sha256: str


class _PendingUpload:
    """A new object being written to a temporary file beside its place (blocking I/O: run
    its methods in a worker thread). Nothing is visible under the key until
    :meth:`finish` links the file into place; :meth:`discard` removes what is left and
    may run at any time, once or more (a lock orders it after a finish in flight)."""

    def __init__(self, key: str, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():  # early and cheap; link(2) in finish() is the real check
            raise ObjectExists(key)
        self.key = key
        self.path = path
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        self.tmp = Path(tmp)
        self._file = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self._lock = threading.Lock()

    def write(self, chunks: builtins.list[bytes]) -> None:
        with self._lock:
            for chunk in chunks:
                self._hash.update(chunk)  # hashlib lets go of the GIL on large buffers
                self._file.write(chunk)

    def finish(self, chunks: builtins.list[bytes], grant: SignedUpload, received: int) -> None:
        """Write the last chunks; link the file into place if the body is the granted one."""
        self.write(chunks)
        with self._lock:
            try:
                if received != grant.size:
                    raise UploadRefused(
                        self.key,
                        "size_mismatch",
                        f"{received} bytes received, {grant.size} granted",
                    )
                if self._hash.hexdigest() != grant.sha256:
                    raise UploadRefused(
                        self.key, "checksum_mismatch", "the body's SHA-256 is not the granted one"
                    )
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                try:
                    os.link(self.tmp, self.path)  # EEXIST if taken: check and write in one step
                except FileExistsError as exc:
                    raise ObjectExists(self.key) from exc
            finally:
                self._discard()

    def discard(self) -> None:
        with self._lock:
            self._discard()

    def _discard(self) -> None:
        self._file.close()
        self.tmp.unlink(missing_ok=True)


class FilesystemObjectStore:
    def __init__(
        self, *, root: Path, base_url: str, signing_key: bytes, now: Callable[[], datetime]
    ) -> None:
        if not signing_key:
            raise ValueError("signing_key must not be empty")
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self._key = signing_key
        self._now = now

    # -- paths -------------------------------------------------------------------------
    def _path(self, key: str) -> Path:
        validate_key(key)
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise InvalidKey(key, "outside the store")
        return path

    # -- data --------------------------------------------------------------------------
    async def put(
        self, key: str, data: bytes, *, content_type: str = "application/octet-stream"
    ) -> None:
        validate_key(key)
        await asyncio.to_thread(self._write, key, data, replace=True)

    async def create_verified(
        self, key: str, chunks: AsyncIterable[bytes], *, grant: SignedUpload
    ) -> None:
        """Store a new object from ``chunks`` only if they are exactly ``grant.size`` bytes
        whose SHA-256 is ``grant.sha256``; else :class:`UploadRefused`, and nothing is left.

        The body is never held whole: it is hashed and written to a temporary file in
        batches of :data:`UPLOAD_FLUSH_BYTES`, and refused (``too_large``) as soon as it
        passes the granted size. :class:`ObjectExists` if the key is taken (never replaced).
        """
        check_upload(grant.size, grant.sha256)
        validate_key(key)
        # A body within one flush (a camera's segment) costs one worker-thread hop:
        # the temporary file is made, written and linked in one go (issue 16, item 3).
        upload: _PendingUpload | None = None
        finished = False
        try:
            pending: builtins.list[bytes] = []
            buffered = received = 0
            async for chunk in chunks:
                received += len(chunk)
                if received > grant.size:
                    raise UploadRefused(
                        key, "too_large", f"more than the {grant.size} bytes granted"
                    )
                pending.append(chunk)
                buffered += len(chunk)
                if buffered >= UPLOAD_FLUSH_BYTES:
                    if upload is None:
                        upload = await asyncio.to_thread(self._pending, key)
                    await asyncio.to_thread(upload.write, pending)
                    pending, buffered = [], 0
            await asyncio.to_thread(self._finish, key, upload, pending, grant, received)
            finished = True
        finally:
            # Also when the client went away mid-body (the handler is cancelled): no
            # temporary file is left behind.
            if upload is not None and not finished:
                upload.discard()

    def _pending(self, key: str) -> _PendingUpload:
        return _PendingUpload(key, self._path(key))

    def _finish(
        self,
        key: str,
        upload: _PendingUpload | None,
        chunks: builtins.list[bytes],
        grant: SignedUpload,
        received: int,
    ) -> None:
        (upload or self._pending(key)).finish(chunks, grant, received)

    async def create(self, key: str, data: bytes) -> None:
        """Store a new object; :class:`ObjectExists` if the key is taken (never replaced)."""
        validate_key(key)
        await asyncio.to_thread(self._write, key, data, replace=False)

    def _write(self, key: str, data: bytes, *, replace: bool) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            if replace:
                os.replace(tmp, path)
            else:
                # link(2) fails with EEXIST when the name is taken: the check and the
                # write are one step, so no racing writer can slip in between.
                try:
                    os.link(tmp, path)
                except FileExistsError as exc:
                    raise ObjectExists(key) from exc
        finally:
            Path(tmp).unlink(missing_ok=True)

    async def get(self, key: str) -> bytes:
        return await asyncio.to_thread(self._read, key)

    def _read(self, key: str) -> bytes:
        # Paths are resolved in the worker thread too: resolving touches the disk.
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    async def stat_many(self, keys: Sequence[str]) -> builtins.list[ObjectInfo | None]:
        for key in keys:
            validate_key(key)
        # One trip to a worker thread for the whole batch, not one per object.
        return await asyncio.to_thread(self._stat_many, keys)

    def _stat_many(self, keys: Sequence[str]) -> builtins.list[ObjectInfo | None]:
        return [self._info(key, self._stat(key)) for key in keys]

    @staticmethod
    def _info(key: str, st: os.stat_result | None) -> ObjectInfo | None:
        if st is None:
            return None
        return ObjectInfo(
            key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)
        )

    async def head(self, key: str) -> ObjectInfo | None:
        return self._info(key, await asyncio.to_thread(self._stat, key))

    def _stat(self, key: str) -> os.stat_result | None:
        # Not through _path(): resolving a path walks it one lstat per component in Python,
        # which dominated a batch check (issue 16). validate_key() leaves no '..' nor an
        # absolute path, and the store never makes symlinks; a symlink at the key itself is
        # no object (lstat). Only a size is revealed here, never contents: get() resolves.
        validate_key(key)
        try:
            st = os.lstat(os.path.join(self.root, key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        return st if stat.S_ISREG(st.st_mode) else None

    async def copy(self, source: str, dest: str) -> None:
        validate_key(dest)
        await self.put(dest, await self.get(source))

    async def delete_many(self, keys: Sequence[str]) -> int:
        for key in keys:
            validate_key(key)
        await asyncio.to_thread(self._unlink_all, keys)
        return len(keys)

    def _unlink_all(self, keys: Sequence[str]) -> None:
        for key in keys:
            path = self._path(key)
            path.unlink(missing_ok=True)
            parent = path.parent
            while parent != self.root:
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

    async def list(self, prefix: str) -> AsyncIterator[ObjectInfo]:
        validate_prefix(prefix)
        infos = await asyncio.to_thread(self._scan, prefix)
        for info in infos:
            yield info

    def _scan(self, prefix: str) -> builtins.list[ObjectInfo]:
        # Walk only the directory the prefix names, then filter by the full prefix.
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        found: builtins.list[ObjectInfo] = []
        if not base.is_dir():
            return found
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames.sort()
            for name in filenames:
                if name.startswith(".tmp-"):
                    continue
                path = Path(dirpath) / name
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    st = path.stat()
                    found.append(
                        ObjectInfo(
                            key=key,
                            size=st.st_size,
                            modified=datetime.fromtimestamp(st.st_mtime, UTC),
                        )
                    )
        found.sort(key=lambda info: info.key)
        return found

    # -- presigned URLs ----------------------------------------------------------------
    def _signature(self, method: str, key: str, expires: int, bound: str = "") -> str:
        # A download's message is unchanged from before uploads were bound (URLs out stay valid).
        message = f"{method}\n{key}\n{expires}{bound}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _presign(
        self, method: str, key: str, expires_in: int, upload: SignedUpload | None = None
    ) -> str:
        validate_key(key)
        if expires_in <= 0:
            raise ValueError("expires_in must be positive")
        expires = int(self._now().timestamp()) + expires_in
        bound = _bound(upload)
        query: dict[str, str | int] = {"expires": expires}
        if upload is not None:
            query |= {"bytes": upload.size, "sha256": upload.sha256}
        query["sig"] = self._signature(method, key, expires, bound)
        return f"{self.base_url}/objects/{quote(key)}?{urlencode(query)}"

    async def presign_get(self, key: str, *, expires_in: int) -> str:
        return self._presign("GET", key, expires_in)

    async def presign_put(
        self, key: str, *, expires_in: int, size: int, sha256: str
    ) -> PresignedPut:
        # No header needed: the URL carries the size and digest under its signature, and
        # the route's create_verified() refuses other bytes or an existing key.
        check_upload(size, sha256)
        return PresignedPut(self._presign("PUT", key, expires_in, SignedUpload(size, sha256)))

    def verify(self, method: str, key: str, expires: str | None, sig: str | None) -> None:
        """Accept a presigned download or raise :class:`SignatureError` / :class:`InvalidKey`."""
        if method == "HEAD":
            method = "GET"
        if method == "PUT":
            raise SignatureError("an upload URL is checked with verify_put")
        self._verify(method, key, expires, sig, "")

    def verify_put(
        self,
        key: str,
        *,
        expires: str | None,
        sig: str | None,
        size: str | None,
        sha256: str | None,
    ) -> SignedUpload:
        """Accept a presigned upload and return what its signature binds, or raise
        :class:`SignatureError` / :class:`InvalidKey`."""
        validate_key(key)
        if not size or not sha256:
            raise SignatureError("missing bytes or sha256")
        try:
            upload = SignedUpload(int(size), sha256)
            check_upload(upload.size, upload.sha256)
        except ValueError as exc:
            raise SignatureError(f"bytes or sha256 malformed: {exc}") from exc
        self._verify("PUT", key, expires, sig, _bound(upload))
        return upload

    def _verify(
        self, method: str, key: str, expires: str | None, sig: str | None, bound: str
    ) -> None:
        validate_key(key)
        if not expires or not sig:
            raise SignatureError("missing expires or sig")
        try:
            expiry = int(expires)
        except ValueError as exc:
            raise SignatureError("expires is not a number") from exc
        expected = self._signature(method, key, expiry, bound)
        if not hmac.compare_digest(expected, sig):
            raise SignatureError("signature does not match")
        if self._now().timestamp() > expiry:
            raise SignatureError("URL expired")

    async def close(self) -> None:
        return None


def _bound(upload: SignedUpload | None) -> str:
    """The part of the signed message that binds an upload's body ("" for a download)."""
    return "" if upload is None else f"\n{upload.size}\n{upload.sha256}"
