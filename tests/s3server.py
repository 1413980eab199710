"""A real S3 server for the bucket tests: moto's standalone server (`moto_server`, from the moto[server]
wheel) in a process of its own on 127.0.0.1, spoken to over HTTP by boto3 and DuckDB's httpfs as any
S3-compatible server is. Credentials are checked: the first few requests (made here) create an IAM
user and its key with the warehouse's bucket policy; every request after must be signed with that
key, so a wrong secret is refused as AWS refuses it.

It also counts the bytes of object bodies it sends (`sent()`): what a query read from the bucket.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3

BUCKET = "odds-lake"
REGION = "us-east-1"
START_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class Server:
    endpoint: str  # http://127.0.0.1:PORT
    key_id: str
    secret: str
    process: subprocess.Popen[bytes]

    def env(self, **more: str) -> dict[str, str]:
        """The AWS variables a warehouse process reaches the server with (plus `more`)."""
        return {**os.environ, "AWS_ACCESS_KEY_ID": self.key_id, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": REGION, **more}

    def client(self) -> Any:
        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=self.key_id,
                            aws_secret_access_key=self.secret)

    def url(self, prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def running(log: Path) -> Iterator[Server]:
    """moto_server on a free port of 127.0.0.1, with one bucket and one IAM key allowed list/get/put."""
    port = free_port()
    executable = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "4", "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    with open(log, "wb") as out:
        process = subprocess.Popen([executable, "-H", "127.0.0.1", "-p", str(port)], stdout=out,
                                   stderr=subprocess.STDOUT, env=env)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
                break
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"moto_server did not start: {log.read_text()[-2000:]}")
            time.sleep(0.1)
        anyone = {"endpoint_url": endpoint, "region_name": REGION, "aws_access_key_id": "setup",
                  "aws_secret_access_key": "setup-secret"}
        iam = boto3.client("iam", **anyone)  # the 4 requests made before credentials are checked
        iam.create_user(UserName="warehouse")
        iam.put_user_policy(UserName="warehouse", PolicyName="lake", PolicyDocument=json.dumps(policy(BUCKET)))
        key = iam.create_access_key(UserName="warehouse")["AccessKey"]
        boto3.client("s3", **anyone).create_bucket(Bucket=BUCKET)
        yield Server(endpoint, key["AccessKeyId"], key["SecretAccessKey"], process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def policy(bucket: str) -> dict[str, Any]:
    """The test key's policy: all of S3 (so a missing bucket is NoSuchBucket, not AccessDenied). moto names
    some S3 actions its own way — ListObjectsV2 for s3:ListBucket — so the narrow AWS policy of
    docs/operations.md is not what is held here: the key is, and a wrong secret is refused."""
    return {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": ["s3:*"], "Resource": ["*"]}]}
