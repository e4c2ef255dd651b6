"""A multipart upload through boto3 that the node's SIGKILL interrupts, then resumes.

Usage: boto3_resume.py ENDPOINT UPLOADER_SECRET upload|resume STATE_FILE

upload: starts an upload of 8 parts of 5 MiB (the bytes derived from a fixed seed) and sends
its parts one after another, writing after each acknowledged part the upload id and the ETags
acknowledged so far to STATE_FILE; the test kills the node meanwhile, and this phase then
fails (exit 3). resume: every part acknowledged before the kill must be listed by ListParts
with its ETag; the parts missing are sent, the upload completed, the object read back and
compared byte for byte. Prints "resumed" at the end.
"""

import hashlib
import json
import os
import sys
import time

import boto3
from botocore.config import Config

endpoint, secret, phase, state_file = sys.argv[1:5]
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    aws_access_key_id="uploader",
    aws_secret_access_key=secret,
    region_name="us-east-1",
    config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}, connect_timeout=2, read_timeout=20),
)
PART = 5 * 1024 * 1024
PARTS = 8


def part(n):
    return hashlib.sha256(b"part %d" % n).digest() * (PART // 32)


def save(state):
    tmp = state_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump(state, f)
    os.replace(tmp, state_file)


def fail(what):
    print(f"FAILED: {what}", file=sys.stderr)
    sys.exit(1)


if phase == "upload":
    upload_id = s3.create_multipart_upload(Bucket="resume", Key="video.bin", ContentType="video/mp4")["UploadId"]
    state = {"upload_id": upload_id, "done": {}}
    save(state)
    try:
        for n in range(1, PARTS + 1):
            r = s3.upload_part(Bucket="resume", Key="video.bin", UploadId=upload_id, PartNumber=n, Body=part(n))
            state["done"][str(n)] = r["ETag"]
            save(state)
            time.sleep(0.3)
    except Exception as e:  # the node was killed: what was acknowledged is in the state file
        print(f"interrupted after {len(state['done'])} parts: {e}")
        sys.exit(3)
    fail("the upload was never interrupted")
elif phase == "resume":
    with open(state_file) as f:
        state = json.load(f)
    upload_id = state["upload_id"]
    listed = {p["PartNumber"]: p["ETag"] for p in s3.list_parts(Bucket="resume", Key="video.bin", UploadId=upload_id).get("Parts", [])}
    for n, etag in state["done"].items():
        if listed.get(int(n)) != etag:
            fail(f"part {n} was acknowledged before the kill but is listed as {listed.get(int(n))}")
    print(f"{len(state['done'])} acknowledged parts survived; {len(listed)} listed")
    etags = {}
    for n in range(1, PARTS + 1):
        if n in listed:
            etags[n] = listed[n]
        else:
            etags[n] = s3.upload_part(Bucket="resume", Key="video.bin", UploadId=upload_id, PartNumber=n, Body=part(n))["ETag"]
        if etags[n] != '"%s"' % hashlib.md5(part(n)).hexdigest():
            fail(f"part {n}'s ETag is not its MD5")
    s3.complete_multipart_upload(
        Bucket="resume",
        Key="video.bin",
        UploadId=upload_id,
        MultipartUpload={"Parts": [{"PartNumber": n, "ETag": etags[n]} for n in range(1, PARTS + 1)]},
    )
    got = s3.get_object(Bucket="resume", Key="video.bin")
    whole = b"".join(part(n) for n in range(1, PARTS + 1))
    if got["Body"].read() != whole or got["ContentType"] != "video/mp4":
        fail("the completed object is not the parts in order")
    print("resumed")
else:
    fail(f"unknown phase {phase}")
