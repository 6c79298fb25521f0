"""Filesystem object store (the embedded default).

Objects are files under ``root``; keys are checked by :func:`validate_key` and the
resolved path must stay inside ``root``, so no key can reach outside it. Writes go to a
temporary file that is renamed into place, so a reader never sees half an object.

Presigned URLs point at the gateway's own HTTP (``{base_url}/objects/{key}``) and carry
``expires`` (Unix seconds on the injected clock) and ``sig``, an HMAC-SHA256 over the
method, key and expiry; :meth:`verify` checks them in constant time.
"""

from __future__ import annotations

import asyncio
import builtins
import hashlib
import hmac
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote, urlencode

from devices.clock import Clock
from storage.objects import (
    InvalidKey,
    ObjectInfo,
    ObjectNotFound,
    ObjectStoreError,
    validate_key,
    validate_prefix,
)


class SignatureError(ObjectStoreError):
    """A presigned URL that is expired, tampered with or malformed."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class FilesystemObjectStore:
    def __init__(self, *, root: Path, base_url: str, signing_key: bytes, clock: Clock) -> None:
        if not signing_key:
            raise ValueError("signing_key must not be empty")
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        self.base_url = base_url.rstrip("/")
        self._key = signing_key
        self._clock = clock

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
        path = self._path(key)
        await asyncio.to_thread(self._write, path, data)

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except (FileNotFoundError, IsADirectoryError) as exc:
            raise ObjectNotFound(key) from exc

    async def head(self, key: str) -> ObjectInfo | None:
        path = self._path(key)
        try:
            st = await asyncio.to_thread(path.stat)
        except FileNotFoundError:
            return None
        if not path.is_file():
            return None
        return ObjectInfo(
            key=key, size=st.st_size, modified=datetime.fromtimestamp(st.st_mtime, UTC)
        )

    async def copy(self, source: str, dest: str) -> None:
        src, dst = self._path(source), self._path(dest)
        if not src.is_file():
            raise ObjectNotFound(source)
        await asyncio.to_thread(self._write, dst, await asyncio.to_thread(src.read_bytes))

    async def delete_many(self, keys: Sequence[str]) -> int:
        paths = [self._path(k) for k in keys]
        await asyncio.to_thread(self._unlink_all, paths)
        return len(paths)

    def _unlink_all(self, paths: builtins.list[Path]) -> None:
        for path in paths:
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
        expires = int(self._clock.now().timestamp()) + expires_in
        query = urlencode({"expires": expires, "sig": self._signature(method, key, expires)})
        return f"{self.base_url}/objects/{quote(key)}?{query}"

    async def presign_get(self, key: str, *, expires_in: int) -> str:
        return self._presign("GET", key, expires_in)

    async def presign_put(self, key: str, *, expires_in: int) -> str:
        return self._presign("PUT", key, expires_in)

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
        if self._clock.now().timestamp() > expiry:
            raise SignatureError("URL expired")

    async def close(self) -> None:
        return None
