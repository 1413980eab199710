"""The lake in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Ceph…): `s3://BUCKET/PREFIX`.

One object per table-day, at the local layout's path under the prefix (warehouse.lifecycle.layout).
Written with boto3 (the standard S3 client: checksums, multipart, every provider's quirks handled):
a finished, checked local file is uploaded as the day's object — one PUT, or a multipart upload that
is completed only after every part is sent (a run killed before never makes an object visible), so a
reader sees the day's previous object or the new one, never half of one. The sha256 of the bytes sent
is stored with the object (`x-amz-meta-sha256`), so retention checks an object against `export_runs`
with a HEAD (size, stored checksum) and the Parquet footer (a ranged GET of the tail, through DuckDB's
httpfs) — never a whole download. Nothing here deletes an object.

Settings: the standard AWS variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN,
AWS_REGION or AWS_DEFAULT_REGION, AWS_ENDPOINT_URL: `http://` means no TLS), overridden by `[export]
s3_endpoint`, `s3_region`, `s3_url_style`. The secret and the token are registered for log masking and
never put in a message. DuckDB reads the bucket with the httpfs extension from its wheel
(duckdb-extension-httpfs), given the same settings as a SECRET.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import urlsplit

from warehouse.backoff import Backoff
from warehouse.lifecycle import layout
from warehouse.redact import redact_logs

if TYPE_CHECKING:
    import duckdb

SCHEME = "s3://"
META_SHA256 = "sha256"  # the object's user metadata key holding the sha256 of its bytes
ATTEMPTS = 4  # a transient fault (5xx, timeout, reset) is tried again, with backoff; a 4xx never
CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 60.0
MULTIPART_THRESHOLD = 64 * 2**20  # one PUT below this; a multipart upload (completed last) above
T = TypeVar("T")


class BucketError(RuntimeError):
    """The bucket could not be used; the message (one line, no secret) names the endpoint and the cause."""


def is_url(root: object) -> bool:
    return isinstance(root, str) and root.startswith(SCHEME)


@dataclass(frozen=True)
class Settings:
    """How to reach the S3 server: the AWS variables, overridden by `[export] s3_*`."""

    endpoint: str | None = None  # None: AWS S3 itself
    region: str | None = None
    url_style: str | None = None  # path or vhost; default path with an endpoint, else vhost
    key_id: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    @classmethod
    def from_env(cls, endpoint: str | None = None, region: str | None = None,
                 url_style: str | None = None) -> Settings:
        env = os.environ
        settings = cls(endpoint=endpoint or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL") or None,
                       region=region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or None,
                       url_style=url_style, key_id=env.get("AWS_ACCESS_KEY_ID") or None,
                       secret=env.get("AWS_SECRET_ACCESS_KEY") or None, token=env.get("AWS_SESSION_TOKEN") or None)
        if settings.url_style not in (None, "path", "vhost"):
            raise BucketError(f"s3_url_style must be path or vhost, not {settings.url_style!r}")
        if settings.endpoint is not None and urlsplit(settings.endpoint).scheme not in ("http", "https"):
            raise BucketError(f"the S3 endpoint {settings.endpoint!r} must start with http:// or https://")
        redact_logs([s for s in (settings.secret, settings.token) if s])
        return settings

    @property
    def style(self) -> str:
        return self.url_style or ("path" if self.endpoint else "vhost")

    @property
    def where(self) -> str:
        """The endpoint, for messages."""
        return self.endpoint or f"AWS S3 ({self.region or 'us-east-1'})"


class Bucket:
    """A lake at `s3://BUCKET/PREFIX`: the storage the export, retention, verify-lake and the readers use."""

    def __init__(self, url: str, settings: Settings | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise BucketError(f"{url!r} is no bucket URL: write s3://BUCKET/PREFIX")
        self.name = parts.netloc
        self.prefix = parts.path.strip("/")
        self.root = f"{SCHEME}{self.name}/{self.prefix}".rstrip("/")  # what layout builds on
        self.settings = settings or Settings.from_env()

    def __str__(self) -> str:
        return self.root

    def key(self, location: str) -> str:
        """The object key of a URL in this bucket."""
        return location.removeprefix(f"{SCHEME}{self.name}/")

    def location(self, table: str, day: date) -> str:
        return layout.location(self.root, table, day)

    # -- writing ---------------------------------------------------------------------------------

    def put(self, local: Path, location: str, sha256: str) -> None:
        """Upload the finished file `local` as the object at `location`, in one step (the commit)."""
        from boto3.s3.transfer import TransferConfig

        config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, use_threads=False)
        self._call(f"upload {location}", lambda: self._client.upload_file(
            str(local), self.name, self.key(location), Config=config,
            ExtraArgs={"Metadata": {META_SHA256: sha256}, "ContentType": "application/vnd.apache.parquet"}))

    def put_bytes(self, location: str, data: bytes) -> None:
        self._call(f"write {location}", lambda: self._client.put_object(Bucket=self.name, Key=self.key(location),
                                                                         Body=data))

    # -- reading ---------------------------------------------------------------------------------

    def head(self, location: str) -> Head | None:
        """The object's size, ETag and stored sha256, or None when there is no such object."""
        found = self._call(f"look at {location}", lambda: self._client.head_object(
            Bucket=self.name, Key=self.key(location)), missing_ok=True)
        if found is None:
            return None
        return Head(int(found["ContentLength"]), str(found.get("ETag", "")).strip('"'),
                    found.get("Metadata", {}).get(META_SHA256))

    def read_bytes(self, location: str) -> bytes | None:
        found = self._call(f"read {location}", lambda: self._client.get_object(
            Bucket=self.name, Key=self.key(location)), missing_ok=True)
        return None if found is None else bytes(found["Body"].read())

    def footer_rows(self, location: str) -> int | None:
        """The Parquet footer's num_rows (DuckDB reads the tail with ranged GETs), or None when the object
        is no readable Parquet file."""
        import duckdb

        try:
            row = self.reader().execute("SELECT num_rows FROM parquet_file_metadata(?)", [location]).fetchone()
        except duckdb.Error:
            return None
        return int(row[0]) if row else None

    def locations(self, table: str) -> list[str]:
        """The table's day objects, oldest day first (only the layout's own names)."""
        prefix = self.key(layout.folder_location(self.root, table)) + "/"
        found: list[str] = []

        def page() -> None:
            found.clear()
            for listing in self._client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix):
                for item in listing.get("Contents", []):
                    location = f"{SCHEME}{self.name}/{item['Key']}"
                    if layout.is_file_location(self.root, table, location):
                        found.append(location)

        self._call(f"list {SCHEME}{self.name}/{prefix}", page)
        return sorted(found)

    def check(self) -> None:
        """That the bucket is there and these credentials may list it (BucketError with the cause)."""
        self._call(f"list {self.root}/", lambda: self._client.list_objects_v2(
            Bucket=self.name, Prefix=self.prefix + "/" if self.prefix else "", MaxKeys=1))

    # -- DuckDB ----------------------------------------------------------------------------------

    def reader(self) -> duckdb.DuckDBPyConnection:
        """A DuckDB connection of this bucket's (for footers), with httpfs and the secret."""
        if self._con is None:
            import duckdb

            self._con = duckdb.connect()
            attach(self._con, self.settings, self.name)
        return self._con

    # -- the client ------------------------------------------------------------------------------

    _con: duckdb.DuckDBPyConnection | None = None

    @functools.cached_property
    def _client(self) -> Any:
        import boto3
        from botocore.config import Config

        s = self.settings
        config = Config(connect_timeout=CONNECT_TIMEOUT_S, read_timeout=READ_TIMEOUT_S,
                        retries={"total_max_attempts": 1, "mode": "standard"},  # ours: warehouse.backoff, in _call
                        s3={"addressing_style": "path" if s.style == "path" else "virtual"},
                        request_checksum_calculation="when_required", response_checksum_validation="when_required")
        return boto3.session.Session().client(
            "s3", endpoint_url=s.endpoint, region_name=s.region or "us-east-1", aws_access_key_id=s.key_id,
            aws_secret_access_key=s.secret, aws_session_token=s.token, config=config)

    def _call(self, what: str, call: Callable[[], T], *, missing_ok: bool = False) -> T:
        """`call`, tried again with backoff on a transient fault; any other fault: BucketError, one line."""
        from boto3.exceptions import S3UploadFailedError
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        backoff = Backoff(0.2, 4.0)
        for attempt in range(1, ATTEMPTS + 1):
            try:
                try:
                    return call()
                except S3UploadFailedError as exc:  # the transfer's wrapper: the server's answer is its context
                    if isinstance(exc.__context__, ClientError):
                        raise exc.__context__ from None
                    raise
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
                if missing_ok and (status == 404 or code in ("404", "NoSuchKey", "NotFound")):
                    return None  # type: ignore[return-value]
                if status < 500 or attempt == ATTEMPTS:
                    raise BucketError(self._cause(what, _client_cause(code, status, self.name))) from None
            except NoCredentialsError:
                raise BucketError(self._cause(what, "no credentials: set AWS_ACCESS_KEY_ID and"
                                                    " AWS_SECRET_ACCESS_KEY")) from None
            except (BotoCoreError, S3UploadFailedError, OSError) as exc:
                if attempt == ATTEMPTS:
                    raise BucketError(self._cause(what, _first_line(exc))) from None
            time.sleep(backoff.next())
        raise AssertionError("unreachable")

    def _cause(self, what: str, cause: str) -> str:
        return f"could not {what} at {self.settings.where}: {cause}"


@dataclass(frozen=True)
class Head:
    bytes: int
    etag: str
    sha256: str | None  # the stored checksum of the bytes the export sent (None: not put by the export)


def attach(con: duckdb.DuckDBPyConnection, settings: Settings, bucket: str | None = None) -> None:
    """Load httpfs from its wheel into `con` and give it the bucket's settings as a SECRET (never shown)."""
    import duckdb
    import duckdb_extension_httpfs as extension

    library = Path(extension.__file__).parent / "extensions" / f"v{duckdb.__version__}" / "httpfs.duckdb_extension"
    if not library.exists():
        raise BucketError(f"no httpfs extension for DuckDB {duckdb.__version__} at {library}; install"
                          f" duckdb-extension-httpfs=={duckdb.__version__}")
    con.execute("SET autoinstall_known_extensions = false")
    con.execute("SET autoload_known_extensions = false")
    con.execute(f"LOAD '{library}'")
    options = {"KEY_ID": settings.key_id, "SECRET": settings.secret, "SESSION_TOKEN": settings.token,
               "REGION": settings.region or "us-east-1", "URL_STYLE": settings.style}
    if settings.endpoint:
        parts = urlsplit(settings.endpoint)
        options["ENDPOINT"] = parts.netloc
        options["USE_SSL"] = "true" if parts.scheme == "https" else "false"
    listed = ", ".join(f"{k} {_quoted(v) if k != 'USE_SSL' else v}" for k, v in options.items() if v)
    scope = f", SCOPE {_quoted(SCHEME + bucket)}" if bucket else ""
    con.execute(f"CREATE OR REPLACE SECRET warehouse_s3 (TYPE s3, {listed}{scope})")


def _quoted(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _client_cause(code: str, status: int, bucket: str) -> str:
    if code == "NoSuchBucket":
        return f"there is no bucket {bucket!r}: create it, or correct [export] dir"
    if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "403", "AccessDenied", "InvalidToken",
                "ExpiredToken") or status in (401, 403):
        return (f"access refused ({code or status}): check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, and that"
                " the bucket policy allows list, get and put on the prefix")
    return f"the server answered {status} {code}".rstrip()


def _first_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300] or type(exc).__name__
