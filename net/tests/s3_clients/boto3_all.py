"""Every S3 operation podstore serves, through boto3 (the AWS SDK for Python), against a node.

Usage: boto3_all.py ENDPOINT UPLOADER_SECRET READER_SECRET OTHER_SECRET

Keys (the node's [[auth.keys]]): "uploader" may write every bucket, "reader" may read only
bucket "photos", "other" may use only bucket "elsewhere". Exits non-zero on the first check
that fails, saying which.
"""

import base64
import hashlib
import sys
import time
import urllib.error
import urllib.request

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

endpoint, up_secret, ro_secret, other_secret = sys.argv[1:5]


def client(key, secret, **cfg):
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}, **cfg),
    )


up = client("uploader", up_secret)
ro = client("reader", ro_secret)
other = client("other", other_secret)


def check(cond, what):
    if not cond:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    print(f"ok: {what}")


def error_code(f):
    try:
        f()
    except ClientError as e:
        return e.response["Error"]["Code"], e.response["ResponseMetadata"]["HTTPStatusCode"]
    return None, 200


# Buckets.
up.create_bucket(Bucket="photos")
check(error_code(lambda: up.create_bucket(Bucket="photos"))[0] == "BucketAlreadyOwnedByYou", "CreateBucket twice")
up.head_bucket(Bucket="photos")
check(error_code(lambda: up.head_bucket(Bucket="nothere"))[1] == 404, "HeadBucket of a missing bucket")
names = [b["Name"] for b in up.list_buckets()["Buckets"]]
check("photos" in names, "ListBuckets shows the new bucket")
loc = up.get_bucket_location(Bucket="photos")
check(loc.get("LocationConstraint") in (None, "us-east-1"), "GetBucketLocation")
check(up.get_bucket_versioning(Bucket="photos").get("Status") is None, "GetBucketVersioning: not enabled")

# PutObject with metadata, Content-MD5 and a checksum; the MD5 is the ETag.
body = bytes(range(256)) * 4000
md5 = hashlib.md5(body)
r = up.put_object(
    Bucket="photos",
    Key="2026/cat.jpg",
    Body=body,
    ContentType="image/jpeg",
    ContentMD5=base64.b64encode(md5.digest()).decode(),
    Metadata={"camera": "z9"},
    CacheControl="max-age=600",
    ChecksumAlgorithm="SHA256",
)
check(r["ETag"] == f'"{md5.hexdigest()}"', "PutObject's ETag is the MD5")
sha = base64.b64encode(hashlib.sha256(body).digest()).decode()
check(up.head_object(Bucket="photos", Key="2026/cat.jpg", ChecksumMode="ENABLED").get("ChecksumSHA256") == sha, "the checksum kept and returned")
g = up.get_object(Bucket="photos", Key="2026/cat.jpg", ChecksumMode="ENABLED")
check(g["Body"].read() == body and g.get("ChecksumSHA256") == sha, "GetObject with the checksum (the SDK validates it)")
bad_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
check(error_code(lambda: up.put_object(Bucket="photos", Key="bad", Body=b"x", ContentMD5=bad_md5))[0] == "BadDigest", "a wrong Content-MD5")
check(error_code(lambda: up.head_object(Bucket="photos", Key="bad"))[1] == 404, "nothing stored after BadDigest")

# X-Copies through an event hook (a header no SDK knows).
def add_copies(request, **kwargs):
    request.headers["X-Copies"] = "any"


up.meta.events.register("before-sign.s3.PutObject", add_copies)
r = up.put_object(Bucket="photos", Key="copies", Body=b"c")
check(r["ResponseMetadata"]["HTTPHeaders"].get("x-podstore-copies-written") == "1", "X-Copies answered")
up.meta.events.unregister("before-sign.s3.PutObject", add_copies)

# GetObject and HeadObject: metadata, ranges, conditionals, response overrides.
h = ro.head_object(Bucket="photos", Key="2026/cat.jpg")
check(h["ContentLength"] == len(body) and h["Metadata"] == {"camera": "z9"} and h["CacheControl"] == "max-age=600", "HeadObject")
g = ro.get_object(Bucket="photos", Key="2026/cat.jpg")
check(g["Body"].read() == body and g["ContentType"] == "image/jpeg", "GetObject")
g = ro.get_object(Bucket="photos", Key="2026/cat.jpg", Range="bytes=100-199")
check(g["Body"].read() == body[100:200] and g["ContentRange"] == f"bytes 100-199/{len(body)}", "a range")
check(error_code(lambda: ro.get_object(Bucket="photos", Key="2026/cat.jpg", Range="bytes=99999999-"))[0] == "InvalidRange", "a range past the end")
check(error_code(lambda: ro.get_object(Bucket="photos", Key="2026/cat.jpg", IfNoneMatch=h["ETag"]))[1] == 304, "If-None-Match")
check(error_code(lambda: ro.get_object(Bucket="photos", Key="2026/cat.jpg", IfMatch='"0"'))[0] == "PreconditionFailed", "If-Match")
g = ro.get_object(Bucket="photos", Key="2026/cat.jpg", ResponseContentType="text/plain", ResponseContentDisposition="attachment")
check(g["ContentType"] == "text/plain" and g["ContentDisposition"] == "attachment", "response-* overrides")
check(error_code(lambda: ro.get_object(Bucket="photos", Key="missing"))[0] == "NoSuchKey", "NoSuchKey")

# Listings: v2 with prefix, delimiter and pages; v1 with markers; versions.
for i in range(25):
    up.put_object(Bucket="photos", Key=f"2026/12/{i:02}.jpg", Body=b"%d" % i)
keys = []
for page in ro.get_paginator("list_objects_v2").paginate(Bucket="photos", Prefix="2026/12/", PaginationConfig={"PageSize": 7}):
    keys += [o["Key"] for o in page.get("Contents", [])]
check(keys == [f"2026/12/{i:02}.jpg" for i in range(25)], "ListObjectsV2 in pages")
top = ro.list_objects_v2(Bucket="photos", Delimiter="/")
check([p["Prefix"] for p in top.get("CommonPrefixes", [])] == ["2026/"] and [o["Key"] for o in top["Contents"]] == ["copies"], "a delimiter")
after = ro.list_objects_v2(Bucket="photos", Prefix="2026/12/", StartAfter="2026/12/22.jpg")
check([o["Key"] for o in after["Contents"]] == ["2026/12/23.jpg", "2026/12/24.jpg"], "StartAfter")
v1 = []
for page in ro.get_paginator("list_objects").paginate(Bucket="photos", PaginationConfig={"PageSize": 10}):
    v1 += [o["Key"] for o in page.get("Contents", [])]
check(len(v1) == 27, "ListObjects (v1) with markers")
versions = ro.list_object_versions(Bucket="photos", Prefix="2026/12/0")
check(len(versions["Versions"]) == 10 and all(v["VersionId"] == "null" for v in versions["Versions"]), "ListObjectVersions")
check(error_code(lambda: up.list_objects_v2(Bucket="nothere"))[0] == "NoSuchBucket", "NoSuchBucket")

# Deletes: one, then a batch (quiet and not).
up.delete_object(Bucket="photos", Key="copies")
check(error_code(lambda: up.head_object(Bucket="photos", Key="copies"))[1] == 404, "DeleteObject")
r = up.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": f"2026/12/{i:02}.jpg"} for i in range(20)]})
check(len(r["Deleted"]) == 20, "DeleteObjects")
r = up.delete_objects(Bucket="photos", Delete={"Objects": [{"Key": f"2026/12/{i:02}.jpg"} for i in range(20, 25)], "Quiet": True})
check("Deleted" not in r and "Errors" not in r, "DeleteObjects, quiet")
check(error_code(lambda: up.delete_bucket(Bucket="photos"))[0] == "BucketNotEmpty", "DeleteBucket of a bucket with objects")

# Refusals: a wrong secret, a key restricted to other buckets, a read-only key writing, an
# expired presigned URL; what podstore does not do is NotImplemented.
check(error_code(lambda: client("reader", up_secret).list_objects_v2(Bucket="photos"))[0] == "SignatureDoesNotMatch", "a wrong secret")
check(error_code(lambda: other.list_objects_v2(Bucket="photos"))[0] == "AccessDenied", "a key restricted to other buckets")
check(error_code(lambda: ro.put_object(Bucket="photos", Key="x", Body=b"x"))[0] == "AccessDenied", "a read-only key writing")
check(error_code(lambda: client("nobody", up_secret).list_buckets())[0] == "InvalidAccessKeyId", "an unknown key")
url = ro.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "2026/cat.jpg"}, ExpiresIn=60)
check(urllib.request.urlopen(url).read() == body, "a presigned URL")
url = ro.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "2026/cat.jpg"}, ExpiresIn=1)
time.sleep(2.5)
try:
    urllib.request.urlopen(url)
    check(False, "an expired presigned URL is refused")
except urllib.error.HTTPError as e:
    check(e.code == 403 and b"expired" in e.read(), "an expired presigned URL is refused")
check(error_code(lambda: up.put_bucket_acl(Bucket="photos", ACL="private"))[0] == "NotImplemented", "PutBucketAcl: NotImplemented")

# CopyObject, and a key may copy only from a bucket it may read.
r = up.copy_object(Bucket="photos", Key="c2", CopySource="photos/2026/cat.jpg")
check(r["CopyObjectResult"]["ETag"] == f'"{md5.hexdigest()}"', "CopyObject")
check(ro.get_object(Bucket="photos", Key="c2")["Body"].read() == body, "the copy reads back")
check(error_code(lambda: other.copy_object(Bucket="elsewhere", Key="c3", CopySource="photos/2026/cat.jpg"))[0] == "AccessDenied", "a copy from a bucket the key may not read")
up.delete_object(Bucket="photos", Key="c2")

# Default settings (the SDK's own checksums, its transfer manager's multipart uploads and
# ranged downloads) and a Signature Version 2 presigned URL.
default = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="uploader", aws_secret_access_key=up_secret, region_name="us-east-1")
big = hashlib.sha256(b"seed").digest() * (12 * 1024 * 1024 // 32 + 7)
import io
import tempfile
from boto3.s3.transfer import TransferConfig

tc = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
default.upload_fileobj(io.BytesIO(big), "photos", "big.bin", Config=tc)
h = default.head_object(Bucket="photos", Key="big.bin")
check(h["ContentLength"] == len(big) and h["ETag"].endswith('-3"'), "upload_fileobj in 3 parts")
with tempfile.TemporaryFile() as f:
    default.download_fileobj("photos", "big.bin", f, Config=tc)
    f.seek(0)
    check(f.read() == big, "download_fileobj in ranges, byte-exact")
default.put_object(Bucket="photos", Key="small", Body=b"checksummed by default")
check(default.get_object(Bucket="photos", Key="small")["Body"].read() == b"checksummed by default", "PutObject with the default checksum")
v2 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="reader", aws_secret_access_key=ro_secret, region_name="us-east-1", config=Config(signature_version="s3", s3={"addressing_style": "path"}))
url = v2.generate_presigned_url("get_object", Params={"Bucket": "photos", "Key": "big.bin"}, ExpiresIn=60)
check("AWSAccessKeyId=" in url and "Signature=" in url, "a Signature Version 2 URL")
check(urllib.request.urlopen(url).read() == big, "a SigV2 presigned URL reads the object")
bad = url.replace("Expires=", "Expires=1")
try:
    urllib.request.urlopen(bad)
    check(False, "a SigV2 URL with a changed expiry is refused")
except urllib.error.HTTPError as e:
    check(e.code in (400, 403), "a SigV2 URL with a changed expiry is refused")
for k in ("big.bin", "small"):
    up.delete_object(Bucket="photos", Key=k)

# The bucket emptied, then deleted.
up.delete_object(Bucket="photos", Key="2026/cat.jpg")
up.delete_bucket(Bucket="photos")
check(error_code(lambda: up.head_bucket(Bucket="photos"))[1] == 404, "DeleteBucket")
print("all boto3 checks passed")
