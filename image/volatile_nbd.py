#!/usr/bin/env python3
"""An NBD server whose disk has a volatile write cache, for image/powercut-test.

Why a server of our own: a power cut test over a qcow2 (or raw) file loses nothing when qemu
is killed, because what qemu wrote sits in the host's page cache and reaches the file anyway
(even with cache=unsafe). A missing fsync in the guest would go unnoticed. nbdkit and qemu-nbd
cannot stand in for a disk that loses its cache: they have no mode that keeps writes in memory
until a flush and then, at a cut, drops or keeps each unflushed block at random (nbdkit's
filters delay, fail or log requests; qemu-nbd writes through to its image). So this server
does just that, and nothing more:

- Writes go to an in-memory cache of 4 KiB blocks (read-modify-write for partial blocks);
  reads see the newest data.
- NBD_CMD_FLUSH makes every write completed before it durable in the backing raw file; a
  write with NBD_CMD_FLAG_FUA makes itself durable (the whole 4 KiB blocks it touches, as
  newest; the guest's virtio disk never sends FUA, qemu only uses it in writethrough mode). Requests are handled one at a time, in
  order, so "completed before" is "received before".
- When the client goes away without NBD_CMD_DISC (qemu SIGKILLed: the power cut), each block
  written since its last flush is dropped (the backing file keeps its durable version) or kept
  at random (seeded): kept as one of the versions written since the last flush, as a disk may
  have written back an older cached version before the newer one arrived. A clean
  NBD_CMD_DISC writes everything back (a disk that stays powered).
- Control mode (--control): FLUSH and FUA are acknowledged and make nothing durable; and at
  the cut every unflushed block is dropped (--keep-probability 0 unless given), so the disk
  is what it was before the client connected: a disk that lies about flushes. A guest on it
  must lose acknowledged writes.

The backing file is not fsynced: the host does not crash, only the client does, so the
host's page cache is as good as the platters here.

Protocol: fixed newstyle handshake (NBD_OPT_GO, NBD_OPT_INFO, NBD_OPT_EXPORT_NAME,
NBD_OPT_LIST, NBD_OPT_ABORT; everything else, structured replies and extended headers
included, is refused with NBD_REP_ERR_UNSUP, so the client uses simple replies), transmission
flags HAS_FLAGS, SEND_FLUSH, SEND_FUA, SEND_WRITE_ZEROES; commands READ, WRITE, FLUSH,
WRITE_ZEROES, DISC. One client connection, then the server prints its counts as one JSON line
and exits. See https://github.com/NetworkBlockDevice/nbd/blob/master/doc/proto.md.

Usage: volatile_nbd.py --backing FILE [--listen 127.0.0.1:0] [--export NAME] [--seed N]
                       [--control] [--keep-probability P] [--commands]
  --commands  read `cut-at-write PID SKIP` lines from stdin: SIGKILL PID (the qemu process)
              right after the SKIP+1-th write from then on, before acknowledging it, so that the
              cut finds unflushed data in the cache
Prints "volatile-nbd: listening on HOST:PORT" once listening, and "volatile-nbd: result
{json}" when the client is gone.
"""

import argparse
import json
import os
import random
import signal
import socket
import struct
import sys
import threading

BLOCK = 4096
MAX_VERSIONS = 8  # unflushed versions kept per block (the cut picks among them)

NBDMAGIC = 0x4E42444D41474943  # "NBDMAGIC"
IHAVEOPT = 0x49484156454F5054  # "IHAVEOPT"
REPLY_MAGIC = 0x3E889045565A9
REQUEST_MAGIC = 0x25609513
SIMPLE_REPLY_MAGIC = 0x67446698

FLAG_FIXED_NEWSTYLE = 1 << 0
FLAG_NO_ZEROES = 1 << 1
FLAG_C_FIXED_NEWSTYLE = 1 << 0
FLAG_C_NO_ZEROES = 1 << 1

OPT_EXPORT_NAME, OPT_ABORT, OPT_LIST, OPT_INFO, OPT_GO = 1, 2, 3, 6, 7
REP_ACK, REP_SERVER, REP_INFO = 1, 2, 3
REP_ERR_UNSUP = (1 << 31) | 1
REP_ERR_INVALID = (1 << 31) | 3
REP_ERR_UNKNOWN = (1 << 31) | 6
INFO_EXPORT, INFO_BLOCK_SIZE = 0, 3

TFLAG_HAS_FLAGS = 1 << 0
TFLAG_SEND_FLUSH = 1 << 2
TFLAG_SEND_FUA = 1 << 3
TFLAG_SEND_WRITE_ZEROES = 1 << 6
TRANSMISSION_FLAGS = TFLAG_HAS_FLAGS | TFLAG_SEND_FLUSH | TFLAG_SEND_FUA | TFLAG_SEND_WRITE_ZEROES

CMD_READ, CMD_WRITE, CMD_DISC, CMD_FLUSH, CMD_WRITE_ZEROES = 0, 1, 2, 3, 6
CMD_FLAG_FUA = 1 << 0
CMD_FLAG_NO_HOLE = 1 << 1
EIO, EINVAL, ENOSPC, ENOTSUP = 5, 22, 28, 95


class VolatileDisk:
    """The disk: a backing file (what is durable) and a cache of unflushed block versions."""

    def __init__(self, path, control=False):
        self.fd = os.open(path, os.O_RDWR)
        self.size = os.fstat(self.fd).st_size
        self.control = control
        self.dirty = {}  # block number -> [versions written since its last flush], oldest first
        self.counts = {"reads": 0, "writes": 0, "flushes": 0, "fua_writes": 0, "bytes_read": 0,
                       "bytes_written": 0}

    def close(self):
        os.close(self.fd)

    def _durable(self, block):
        data = os.pread(self.fd, BLOCK, block * BLOCK)
        return data + bytes(BLOCK - len(data))

    def _newest(self, block):
        versions = self.dirty.get(block)
        return versions[-1] if versions else self._durable(block)

    def _persist(self, block, data):
        end = min(BLOCK, self.size - block * BLOCK)
        os.pwrite(self.fd, data[:end], block * BLOCK)

    def read(self, offset, length):
        self.counts["reads"] += 1
        self.counts["bytes_read"] += length
        first, last = offset // BLOCK, (offset + length - 1) // BLOCK
        if not any(b in self.dirty for b in range(first, last + 1)):
            data = os.pread(self.fd, length, offset)
            return data + bytes(length - len(data))
        out = bytearray()
        for b in range(first, last + 1):
            out += self._newest(b)
        start = offset - first * BLOCK
        return bytes(out[start:start + length])

    def write(self, offset, data, fua=False):
        self.counts["writes"] += 1
        self.counts["bytes_written"] += len(data)
        first, last = offset // BLOCK, (offset + len(data) - 1) // BLOCK
        for b in range(first, last + 1):
            lo, hi = max(offset, b * BLOCK), min(offset + len(data), (b + 1) * BLOCK)
            if hi - lo == BLOCK:
                block = bytes(data[lo - offset:hi - offset])
            else:
                block = bytearray(self._newest(b))
                block[lo - b * BLOCK:hi - b * BLOCK] = data[lo - offset:hi - offset]
                block = bytes(block)
            versions = self.dirty.setdefault(b, [])
            versions.append(block)
            del versions[:-MAX_VERSIONS]
        if fua:
            self.counts["fua_writes"] += 1
            if not self.control:
                for b in range(first, last + 1):
                    self._persist(b, self.dirty.pop(b)[-1])

    def flush(self):
        self.counts["flushes"] += 1
        if self.control:
            return
        for b, versions in self.dirty.items():
            self._persist(b, versions[-1])
        self.dirty.clear()

    def write_back_all(self):
        """A clean disconnect: the cache is written back."""
        for b, versions in self.dirty.items():
            self._persist(b, versions[-1])
        written = len(self.dirty)
        self.dirty.clear()
        return written

    def cut(self, rng, keep_probability):
        """Power lost: each unflushed block is dropped or one of its versions kept."""
        dropped = kept_newest = kept_older = 0
        for b in sorted(self.dirty):
            versions = self.dirty[b]
            if rng.random() >= keep_probability:
                dropped += 1
                continue
            i = rng.randrange(len(versions))
            self._persist(b, versions[i])
            if i == len(versions) - 1:
                kept_newest += 1
            else:
                kept_older += 1
        self.dirty.clear()
        return {"dropped": dropped, "kept": kept_newest + kept_older, "kept_older_version": kept_older}


class CutTrigger:
    """`cut-at-write PID SKIP` on stdin: SIGKILL PID (qemu) right after the SKIP+1-th disk write
    from then on, before that write is acknowledged, so the cut finds the cache holding
    unflushed data (a kill at an arbitrary moment mostly lands between two flushed commits)."""

    def __init__(self):
        self.pid = None
        self.skip = 0
        self.fired = None

    def arm(self, pid, skip):
        self.skip = skip
        self.pid = pid

    def on_write(self, disk):
        if self.pid is None or self.fired is not None:
            return False
        if self.skip > 0:
            self.skip -= 1
            return False
        self.fired = len(disk.dirty)
        os.kill(self.pid, signal.SIGKILL)
        return True

    def listen(self, stream):
        def read():
            for line in stream:
                words = line.split()
                if len(words) == 3 and words[0] == "cut-at-write":
                    self.arm(int(words[1]), int(words[2]))
        threading.Thread(target=read, daemon=True).start()


class Closed(Exception):
    pass


def recv_exact(sock, n):
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise Closed()
        buf += chunk
    return bytes(buf)


def option_reply(sock, option, reply, data=b""):
    sock.sendall(struct.pack(">QIII", REPLY_MAGIC, option, reply, len(data)) + data)


def handshake(sock, disk, export):
    """Fixed newstyle negotiation. True once in transmission, False if the client aborted."""
    sock.sendall(struct.pack(">QQH", NBDMAGIC, IHAVEOPT, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES))
    (client_flags,) = struct.unpack(">I", recv_exact(sock, 4))
    if not client_flags & FLAG_C_FIXED_NEWSTYLE:
        return False  # only fixed newstyle clients (qemu, nbd-client, libnbd are)
    no_zeroes = bool(client_flags & FLAG_C_NO_ZEROES)
    while True:
        magic, option, length = struct.unpack(">QII", recv_exact(sock, 16))
        if magic != IHAVEOPT:
            return False
        data = recv_exact(sock, length)
        if option == OPT_EXPORT_NAME:
            if data.decode(errors="replace") not in ("", export):
                return False  # no way to refuse EXPORT_NAME but to close
            sock.sendall(struct.pack(">QH", disk.size, TRANSMISSION_FLAGS) + (b"" if no_zeroes else bytes(124)))
            return True
        if option == OPT_ABORT:
            option_reply(sock, option, REP_ACK)
            return False
        if option == OPT_LIST:
            if data:
                option_reply(sock, option, REP_ERR_INVALID, b"NBD_OPT_LIST takes no data")
                continue
            name = export.encode()
            option_reply(sock, option, REP_SERVER, struct.pack(">I", len(name)) + name)
            option_reply(sock, option, REP_ACK)
            continue
        if option in (OPT_INFO, OPT_GO):
            if len(data) < 6:
                option_reply(sock, option, REP_ERR_INVALID, b"short NBD_OPT_INFO/GO")
                continue
            (name_len,) = struct.unpack(">I", data[:4])
            if len(data) < 4 + name_len + 2:
                option_reply(sock, option, REP_ERR_INVALID, b"short NBD_OPT_INFO/GO")
                continue
            name = data[4:4 + name_len].decode(errors="replace")
            (n_info,) = struct.unpack(">H", data[4 + name_len:6 + name_len])
            if len(data) != 6 + name_len + 2 * n_info:
                option_reply(sock, option, REP_ERR_INVALID, b"NBD_OPT_INFO/GO length mismatch")
                continue
            requests = struct.unpack(f">{n_info}H", data[6 + name_len:]) if n_info else ()
            if name not in ("", export):
                option_reply(sock, option, REP_ERR_UNKNOWN, f"no export named {name!r}".encode())
                continue
            option_reply(sock, option, REP_INFO, struct.pack(">HQH", INFO_EXPORT, disk.size, TRANSMISSION_FLAGS))
            if INFO_BLOCK_SIZE in requests:
                # Any 1-byte-aligned request works; 4 KiB is what the cache is made of.
                option_reply(sock, option, REP_INFO, struct.pack(">HIII", INFO_BLOCK_SIZE, 1, BLOCK, 32 << 20))
            option_reply(sock, option, REP_ACK)
            if option == OPT_GO:
                return True
            continue
        # STARTTLS, STRUCTURED_REPLY, meta contexts, EXTENDED_HEADERS, anything newer.
        option_reply(sock, option, REP_ERR_UNSUP, f"option {option} not supported".encode())


def transmission(sock, disk, trigger=None):
    """Serves requests in order. Returns True after NBD_CMD_DISC, False when the client vanished."""
    while True:
        try:
            header = recv_exact(sock, 28)
        except (Closed, ConnectionError):
            return False
        magic, flags, cmd, handle, offset, length = struct.unpack(">IHHQQI", header)
        if magic != REQUEST_MAGIC:
            return False  # the stream is lost; a client never does this
        if cmd == CMD_DISC:
            return True
        payload = b""
        if cmd == CMD_WRITE:
            try:
                payload = recv_exact(sock, length)
            except (Closed, ConnectionError):
                return False  # cut mid-request: this write never completed
        error, data = 0, b""
        if cmd in (CMD_READ, CMD_WRITE, CMD_WRITE_ZEROES) and offset + length > disk.size:
            error = ENOSPC if cmd != CMD_READ else EINVAL
        elif cmd == CMD_READ:
            data = disk.read(offset, length) if length else b""
        elif cmd in (CMD_WRITE, CMD_WRITE_ZEROES):
            if length:
                disk.write(offset, payload if cmd == CMD_WRITE else bytes(length), fua=bool(flags & CMD_FLAG_FUA))
            if trigger is not None and trigger.on_write(disk):
                continue  # the client is dead: this write is never acknowledged
        elif cmd == CMD_FLUSH:
            disk.flush()
        else:
            error = EINVAL  # not advertised (TRIM, CACHE, BLOCK_STATUS, ...)
        try:
            sock.sendall(struct.pack(">IIQ", SIMPLE_REPLY_MAGIC, error, handle) + (data if not error else b""))
        except (ConnectionError, BrokenPipeError):
            return False


def serve_one(listener, disk, export, rng, keep_probability, trigger=None):
    """Accepts one client, serves it, applies the cut if it vanished; returns the counts."""
    conn, _ = listener.accept()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    clean = False
    try:
        try:
            if handshake(conn, disk, export):
                clean = transmission(conn, disk, trigger)
        except (Closed, ConnectionError):
            clean = False
    finally:
        conn.close()
    pending = len(disk.dirty)
    if clean:
        result = {"end": "disconnect", "unflushed_blocks": pending, "written_back": disk.write_back_all()}
    else:
        result = {"end": "cut", "unflushed_blocks": pending, **disk.cut(rng, keep_probability)}
    result.update(disk.counts)
    result["control"] = disk.control
    if trigger is not None:
        result["killed_at_write"] = trigger.fired is not None
        result["unflushed_blocks_at_kill"] = trigger.fired
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backing", required=True)
    parser.add_argument("--listen", default="127.0.0.1:0")
    parser.add_argument("--export", default="butler-edge")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--control", action="store_true")
    parser.add_argument("--keep-probability", type=float, default=None)
    parser.add_argument("--commands", action="store_true",
                        help="read `cut-at-write PID SKIP` from stdin (see CutTrigger)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 32)
    keep = args.keep_probability if args.keep_probability is not None else (0.0 if args.control else 0.5)
    disk = VolatileDisk(args.backing, control=args.control)
    host, port = args.listen.rsplit(":", 1)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, int(port)))
    listener.listen(1)
    print(f"volatile-nbd: listening on {host}:{listener.getsockname()[1]} (seed {seed}, "
          f"{'control: flushes ignored' if args.control else 'honest'}, keep probability {keep})", flush=True)
    trigger = None
    if args.commands:
        trigger = CutTrigger()
        trigger.listen(sys.stdin)
    result = serve_one(listener, disk, args.export, random.Random(seed), keep, trigger)
    listener.close()
    disk.close()
    result["seed"] = seed
    print("volatile-nbd: result " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
