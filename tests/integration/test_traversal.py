"""No job id or file path escapes its job's prefix in the bucket or its directory on disk.

Requests are written byte for byte on a socket, because HTTP clients normalise ``..`` and
percent-escapes away before sending, and an attacker's would not. Every route of the real
gateway taking a job id or a file is tried, so routes added later are covered too.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from minio import Minio

from tests.support.routes import gateway_routes

MARKER = b"traversal-attempt"

JOB_IDS = [
    "..",
    ".",
    "%2e%2e",
    "%2E%2E",
    "..%2F..%2Fetc",
    "%2e%2e%2f%2e%2e%2fetc",
    "%2Fetc%2Fpasswd",
    "..%5C..%5Cetc",
    "job%5C..",
    "job%00",
    "%00",
    "job%2500",
    ".hidden",
    "-dash",
    "job%0Aid",
    "a" * 129,
]
FILES = [
    "..",
    "../job.json",
    "../../other/inputs/x",
    "..%2Fstatus.json",
    "%2e%2e/%2e%2e/x",
    "%2e%2e%2f%2e%2e%2fx",
    "/etc/passwd",
    "%2Fetc%2Fpasswd",
    "..%5C..%5Cx",
    "a%5C..%5C..%5Cb",
    "C:%5Cwindows",
    "a%00b",
    "x.json%00.png",
    "a/./b",
    "./a",
    "a//b",
    "a/..",
    "a/../../../x",
]
BODY_JOB_IDS = ["..", "../x", "/etc/passwd", "a\\b", "a\x00b", ".hidden", "a/b", ""]


async def raw(port: int, method: str, target: str, body: bytes = b"") -> tuple[int, dict, bytes]:
    """One request with ``target`` exactly as given; the status, headers and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(body)}\r\n"
        "Content-Type: application/json\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    await writer.wait_closed()
    head_bytes, _, payload = data.partition(b"\r\n\r\n")
    status_line, *lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines)}
    return int(status_line.split()[1]), headers, payload


def snapshot(minio_client: Minio, bucket: str, root: Path) -> tuple[set[str], set[str]]:
    keys = {o.object_name for o in minio_client.list_objects(bucket, recursive=True)}
    return keys, {str(p) for p in root.rglob("*")}


async def test_job_ids_and_files_that_would_escape_are_refused_and_nothing_is_written(
    stack, config, broker, minio_client, test_bucket, tmp_path, job_id
):
    declared = {"job_id": job_id, "model": {"name": "echo", "version": "1"}, "payload": 7}
    assert (await stack.post("/start-job", json=declared)).status_code == 202
    waited = await stack.get(f"/jobs/{job_id}/wait_ready", params={"timeout": 30})
    assert waited.json()["state"] == "done"
    before = await asyncio.to_thread(snapshot, minio_client, test_bucket, tmp_path)

    routes = [(m, p) for m, p in gateway_routes(config, broker) if "{job_id}" in p]
    assert ("PUT", "/jobs/{job_id}/input/{file:path}") in routes
    attempts = []
    for method, template in routes:
        for bad in JOB_IDS:
            target = template.replace("{job_id}", bad).replace("{file:path}", "a.json")
            attempts.append((method, target, {400, 404}))
        if "{file:path}" in template:
            for bad in FILES:
                target = template.replace("{job_id}", job_id).replace("{file:path}", bad)
                # The job exists and the route matches: only the file name can be refused.
                attempts.append((method, target, {400}))
    port = config.gateway.port
    for method, target, expected in attempts:
        status, headers, payload = await raw(port, method, target, MARKER)
        assert status in expected, (method, target, status, payload)
        assert headers["content-type"] == "application/problem+json", (method, target)
        problem = json.loads(payload)
        assert problem["status"] == status and problem["detail"], (method, target)

    for bad in BODY_JOB_IDS:
        body = json.dumps({**declared, "job_id": bad}).encode()
        status, headers, payload = await raw(port, "POST", "/start-job", body)
        assert status == 422, (bad, payload)
        assert headers["content-type"] == "application/problem+json"
        assert json.loads(payload)["errors"][0]["field"] == "job_id"

    after = await asyncio.to_thread(snapshot, minio_client, test_bucket, tmp_path)
    # Nothing new anywhere (the sheep may still be tidying up the finished job's directory).
    assert after[0] - before[0] == set()
    assert after[1] - before[1] == set()
    assert (await stack.get(f"/jobs/{job_id}/result")).content == b"7"
