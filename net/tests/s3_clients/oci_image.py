"""Writes a small OCI image layout (one layer of 12 MiB of incompressible bytes and a small
one) for the registry test, with nothing fetched from anywhere.

Usage: oci_image.py DIR TAG
"""

import gzip
import hashlib
import io
import json
import os
import sys
import tarfile

out, tag = sys.argv[1:3]
blobs = os.path.join(out, "blobs", "sha256")
os.makedirs(blobs, exist_ok=True)


def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(os.path.join(blobs, digest), "wb") as f:
        f.write(data)
    return {"digest": "sha256:" + digest, "size": len(data)}


def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as t:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_700_000_000
            t.addfile(info, io.BytesIO(data))
    tar = raw.getvalue()
    return blob(gzip.compress(tar, mtime=0)), "sha256:" + hashlib.sha256(tar).hexdigest()


noise = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(12 * 1024 * 1024 // 32))
layers = [layer([("data/noise.bin", noise)]), layer([("etc/motd", b"hello from podstore\n")])]
config = blob(json.dumps({
    "architecture": "amd64",
    "os": "linux",
    "config": {"Cmd": ["/bin/true"]},
    "rootfs": {"type": "layers", "diff_ids": [d for _, d in layers]},
}).encode())
manifest = json.dumps({
    "schemaVersion": 2,
    "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **b} for b, _ in layers],
}).encode()
m = blob(manifest)
with open(os.path.join(out, "index.json"), "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        **m,
        "annotations": {"org.opencontainers.image.ref.name": tag},
    }]}, f)
with open(os.path.join(out, "oci-layout"), "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
print(json.dumps([b["digest"] for b, _ in layers]))
