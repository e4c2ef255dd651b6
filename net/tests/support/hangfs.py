#!/usr/bin/env python3
"""A passthrough FUSE filesystem whose reads can be made to hang, for the disk-hang test
(net/tests/disk_hang.rs): a disk that stops answering rather than failing.

    hangfs.py BACKING_DIR MOUNTPOINT HANG_FLAG_FILE

While HANG_FLAG_FILE exists, every read blocks (the device stopped answering); once it is
removed, reads answer again (the blocked ones too). (A flag file, not a signal: Python runs
signal handlers only between bytecodes, and the main thread stays in libfuse.) Every file is opened with direct_io, so reads always reach this
process (no page cache in between). Needs mfusepy (pip) and libfuse 3; root mounts directly.
"""
import ctypes.util
import errno
import os
import sys
import threading
import time

# mfusepy takes libfuse 2 when both are installed (s3fs, which the S3 client tests install,
# brings it), and the blocking reads this filesystem is for behave differently there: the
# whole mount stopped answering, not only the reads. libfuse 3 it is, by name.
if not os.environ.get("FUSE_LIBRARY_PATH") and ctypes.util.find_library("fuse3"):
    os.environ["FUSE_LIBRARY_PATH"] = ctypes.util.find_library("fuse3")

import mfusepy as fuse  # noqa: E402

answering = threading.Event()
answering.set()


class HangFS(fuse.Operations):
    use_ns = True

    def __init__(self, root):
        self.root = os.path.realpath(root)

    def _p(self, path):
        return os.path.join(self.root, path.lstrip("/"))

    def getattr(self, path, fh=None):
        st = os.lstat(self._p(path))
        keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_atime", "st_mtime", "st_ctime")
        return {k: getattr(st, k) for k in keys}

    def readdir(self, path, fh):
        return [".", ".."] + os.listdir(self._p(path))

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)

    def rmdir(self, path):
        os.rmdir(self._p(path))

    def unlink(self, path):
        os.unlink(self._p(path))

    def rename(self, old, new):
        os.rename(self._p(old), self._p(new))

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)

    def utimens(self, path, times=None):
        os.utime(self._p(path), ns=times)

    def truncate(self, path, length, fh=None):
        os.truncate(self._p(path), length)

    def _flags(self, flags):
        return flags & ~getattr(os, "O_DIRECT", 0)

    def create(self, path, mode, fi=None):
        flags = self._flags(fi.flags) if fi is not None else os.O_WRONLY | os.O_TRUNC
        fd = os.open(self._p(path), flags | os.O_CREAT, mode)
        if fi is not None:
            fi.fh = fd
            fi.direct_io = 1
            return 0
        return fd

    def open(self, path, fi):
        fi.fh = os.open(self._p(path), self._flags(fi.flags))
        fi.direct_io = 1
        return 0

    def read(self, path, size, offset, fi):
        answering.wait()
        return os.pread(fi.fh, size, offset)

    def write(self, path, data, offset, fi):
        return os.pwrite(fi.fh, data, offset)

    def fsync(self, path, datasync, fi):
        (os.fdatasync if datasync else os.fsync)(fi.fh)
        return 0

    def fsyncdir(self, path, datasync, fi):
        return 0

    def flush(self, path, fi):
        return 0

    def release(self, path, fi):
        os.close(fi.fh)
        return 0

    def fallocate(self, path, mode, offset, size, fi):
        if mode != 0:
            raise fuse.FuseOSError(errno.EOPNOTSUPP)
        os.posix_fallocate(fi.fh, offset, size)
        return 0

    def statfs(self, path):
        st = os.statvfs(self._p(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files", "f_flag",
                "f_frsize", "f_namemax")
        return {k: getattr(st, k) for k in keys}


def watch(flag):
    while True:
        if os.path.exists(flag):
            answering.clear()
        else:
            answering.set()
        time.sleep(0.02)


def main():
    backing, mountpoint, flag = sys.argv[1], sys.argv[2], sys.argv[3]
    threading.Thread(target=watch, args=(flag,), daemon=True).start()
    fuse.FUSE(HangFS(backing), mountpoint, foreground=True, raw_fi=True, direct_io=True)


if __name__ == "__main__":
    main()
