"""Filesystem object store (the embedded default).

Objects are files under ``root``; keys are checked by :func:`validate_key` and the
resolved path must stay inside ``root``, so no key can reach outside it. Writes go to a
temporary file that is renamed into place, so a reader never sees half an object.

Presigned URLs point at the gateway's own HTTP (``{base_url}/objects/{key}``) and carry
``expires`` (Unix seconds on the service's clock, read through the injected ``now``) and
``sig``, an HMAC-SHA256 over the method, key and expiry; :meth:`verify` checks them in
constant time.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import os
import stat
import tempfile
from collections.abc import AsyncIterator, Callable, Sequence
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
    validate_key,
    validate_prefix,
)


class SignatureError(ObjectStoreError):
    """A presigned URL that is expired, tampered with or malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


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

    async def get_many(self, keys: Sequence[str]) -> builtins.list[bytes | None]:
        for key in keys:
            validate_key(key)
        # One trip to a worker thread for the whole batch, not one per object.
        return await asyncio.to_thread(self._read_many, keys)

    def _read_many(self, keys: Sequence[str]) -> builtins.list[bytes | None]:
        found: builtins.list[bytes | None] = []
        for key in keys:
            try:
                found.append(self._read(key))
            except ObjectNotFound:
                found.append(None)
        return found

    async def head(self, key: str) -> ObjectInfo | None:
        st = await asyncio.to_thread(self._stat, key)
        if st is None:
            return None
        return ObjectInfo(
            key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)
        )

    def _stat(self, key: str) -> os.stat_result | None:
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
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
    def _signature(self, method: str, key: str, expires: int) -> str:
        message = f"{method}\n{key}\n{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def _presign(self, method: str, key: str, expires_in: int) -> str:
        validate_key(key)
        if expires_in <= 0:
            raise ValueError("expires_in must be positive")
        expires = int(self._now().timestamp()) + expires_in
        query = urlencode({"expires": expires, "sig": self._signature(method, key, expires)})
        return f"{self.base_url}/objects/{quote(key)}?{query}"

    async def presign_get(self, key: str, *, expires_in: int) -> str:
        return self._presign("GET", key, expires_in)

    async def presign_put(self, key: str, *, expires_in: int) -> PresignedPut:
        # No header needed: the route's create() refuses an existing key whatever is sent.
        return PresignedPut(self._presign("PUT", key, expires_in))

    def verify(self, method: str, key: str, expires: str | None, sig: str | None) -> None:
        """Accept a presigned request or raise :class:`SignatureError` / :class:`InvalidKey`."""
        validate_key(key)
        if method == "HEAD":
            method = "GET"
        if not expires or not sig:
            raise SignatureError("missing expires or sig")
        try:
            expiry = int(expires)
        except ValueError as exc:
            raise SignatureError("expires is not a number") from exc
        expected = self._signature(method, key, expiry)
        if not hmac.compare_digest(expected, sig):
            raise SignatureError("signature does not match")
        if self._now().timestamp() > expiry:
            raise SignatureError("URL expired")

    async def close(self) -> None:
        return None
