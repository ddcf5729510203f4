#!/usr/bin/env python3
"""Unit tests of image/volatile_nbd.py's semantics, through the wire protocol with a tiny NBD
client of this file (and once with qemu-io, a real client, when it is installed).
Run: python3 image/volatile_nbd_test.py (image/powercut-test runs it first)."""

import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import volatile_nbd as nbd  # noqa: E402

SIZE = 1 << 20


class Client:
    """Just enough of an NBD client: fixed newstyle, NBD_OPT_GO, simple replies."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.handle = 0
        magic, opt, flags = struct.unpack(">QQH", self.recv(18))
        assert magic == nbd.NBDMAGIC and opt == nbd.IHAVEOPT and flags & nbd.FLAG_FIXED_NEWSTYLE
        self.sock.sendall(struct.pack(">I", nbd.FLAG_C_FIXED_NEWSTYLE | nbd.FLAG_C_NO_ZEROES))

    def recv(self, n):
        return nbd.recv_exact(self.sock, n)

    def option(self, option, data=b""):
        self.sock.sendall(struct.pack(">QII", nbd.IHAVEOPT, option, len(data)) + data)

    def option_reply(self):
        magic, option, reply, length = struct.unpack(">QIII", self.recv(20))
        assert magic == nbd.REPLY_MAGIC
        return option, reply, self.recv(length)

    def go(self, name=b"butler-edge", infos=(nbd.INFO_BLOCK_SIZE,)):
        self.option(nbd.OPT_GO, struct.pack(">I", len(name)) + name + struct.pack(f">H{len(infos)}H", len(infos), *infos))
        replies = []
        while True:
            option, reply, data = self.option_reply()
            replies.append((reply, data))
            if reply != nbd.REP_INFO:
                return replies

    def request(self, cmd, offset=0, length=0, data=b"", flags=0):
        self.handle += 1
        self.sock.sendall(struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, flags, cmd, self.handle, offset,
                                      len(data) if cmd == nbd.CMD_WRITE else length) + data)
        if cmd == nbd.CMD_DISC:
            self.sock.close()
            return 0, b""
        magic, error, handle = struct.unpack(">IIQ", self.recv(16))
        assert magic == nbd.SIMPLE_REPLY_MAGIC and handle == self.handle
        return error, (self.recv(length) if cmd == nbd.CMD_READ and not error else b"")

    def write(self, offset, data, fua=False):
        assert self.request(nbd.CMD_WRITE, offset, data=data, flags=nbd.CMD_FLAG_FUA if fua else 0)[0] == 0

    def read(self, offset, length):
        error, data = self.request(nbd.CMD_READ, offset, length)
        assert error == 0
        return data

    def flush(self):
        assert self.request(nbd.CMD_FLUSH)[0] == 0

    def cut(self):
        self.sock.close()  # no NBD_CMD_DISC: the client died


class Server:
    def __init__(self, backing, control=False, keep=None, seed=1, trigger=None):
        self.disk = nbd.VolatileDisk(backing, control=control)
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.port = self.listener.getsockname()[1]
        keep = keep if keep is not None else (0.0 if control else 0.5)
        self.result = None
        self.thread = threading.Thread(
            target=lambda: setattr(self, "result", nbd.serve_one(self.listener, self.disk, "butler-edge",
                                                                  random.Random(seed), keep, trigger)))
        self.thread.start()

    def finish(self):
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.listener.close()
        self.disk.close()
        return self.result


class VolatileNbdTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp()
        self.backing = os.path.join(self.dir, "disk.raw")
        with open(self.backing, "wb") as f:
            f.write(bytes(SIZE))

    def tearDown(self):
        shutil.rmtree(self.dir)

    def durable(self, offset, length):
        with open(self.backing, "rb") as f:
            f.seek(offset)
            return f.read(length)

    def session(self, **kw):
        server = Server(self.backing, **kw)
        client = Client(server.port)
        replies = client.go()
        self.assertEqual(replies[-1][0], nbd.REP_ACK)
        return server, client

    def test_negotiation(self):
        server = Server(self.backing)
        c = Client(server.port)
        c.option(8)  # NBD_OPT_STRUCTURED_REPLY: not implemented, refused as such
        self.assertEqual(c.option_reply()[1], nbd.REP_ERR_UNSUP)
        c.option(11)  # NBD_OPT_EXTENDED_HEADERS
        self.assertEqual(c.option_reply()[1], nbd.REP_ERR_UNSUP)
        c.option(nbd.OPT_LIST)
        self.assertEqual(c.option_reply()[1:], (nbd.REP_SERVER, struct.pack(">I", 11) + b"butler-edge"))
        self.assertEqual(c.option_reply()[1], nbd.REP_ACK)
        self.assertEqual(c.go(b"other")[-1][0], nbd.REP_ERR_UNKNOWN)
        name = b"butler-edge"
        c.option(nbd.OPT_INFO, struct.pack(">I", len(name)) + name + struct.pack(">H", 0))
        option, reply, data = c.option_reply()
        self.assertEqual((reply, data), (nbd.REP_INFO, struct.pack(">HQH", nbd.INFO_EXPORT, SIZE, nbd.TRANSMISSION_FLAGS)))
        self.assertEqual(c.option_reply()[1], nbd.REP_ACK)  # INFO stays in negotiation
        replies = c.go()
        self.assertEqual([r for r, _ in replies], [nbd.REP_INFO, nbd.REP_INFO, nbd.REP_ACK])
        _, size, flags = struct.unpack(">HQH", replies[0][1])
        self.assertEqual(size, SIZE)
        for flag in (nbd.TFLAG_HAS_FLAGS, nbd.TFLAG_SEND_FLUSH, nbd.TFLAG_SEND_FUA):
            self.assertTrue(flags & flag)
        self.assertEqual(c.request(nbd.CMD_READ, SIZE - 512, 1024)[0], nbd.EINVAL)  # past the end
        self.assertEqual(c.request(4, 0, 4096)[0], nbd.EINVAL)  # TRIM: not advertised
        c.request(nbd.CMD_DISC)
        self.assertEqual(server.finish()["end"], "disconnect")

    def test_export_name_path(self):
        server = Server(self.backing)
        c = Client(server.port)
        c.option(nbd.OPT_EXPORT_NAME, b"butler-edge")
        size, flags = struct.unpack(">QH", c.recv(10))  # NO_ZEROES agreed: no padding
        self.assertEqual((size, flags), (SIZE, nbd.TRANSMISSION_FLAGS))
        c.write(0, b"x" * 4096)
        self.assertEqual(c.read(0, 4096), b"x" * 4096)
        c.request(nbd.CMD_DISC)
        self.assertEqual(server.finish()["written_back"], 1)
        self.assertEqual(self.durable(0, 4096), b"x" * 4096)  # a clean disconnect writes back

    def test_reads_see_newest_data_and_partial_blocks(self):
        server, c = self.session()
        c.write(0, b"a" * 8192)
        c.write(1000, b"b" * 5000)  # partial first and last block: read-modify-write
        expect = b"a" * 1000 + b"b" * 5000 + b"a" * 2192
        self.assertEqual(c.read(0, 8192), expect)
        self.assertEqual(c.read(999, 3), b"abb")
        c.flush()
        self.assertEqual(self.durable(0, 8192), expect)
        self.assertEqual(self.durable(8192, 4096), bytes(4096))
        c.cut()
        server.finish()

    def test_cut_drops_unflushed_keeps_flushed_and_fua(self):
        server, c = self.session(keep=0.0)
        c.write(0, b"f" * 4096)
        c.flush()
        c.write(0, b"u" * 4096)  # over the flushed block, never flushed
        c.write(8192, b"u" * 4096)
        c.write(16384, b"z" * 4096, fua=True)
        self.assertEqual(c.read(0, 4096), b"u" * 4096)
        c.cut()
        result = server.finish()
        self.assertEqual((result["end"], result["unflushed_blocks"], result["dropped"]), ("cut", 2, 2))
        self.assertEqual(self.durable(0, 4096), b"f" * 4096)
        self.assertEqual(self.durable(8192, 4096), bytes(4096))
        self.assertEqual(self.durable(16384, 4096), b"z" * 4096)

    def test_random_cut_keeps_each_block_in_a_state_it_was_in(self):
        server, c = self.session(keep=0.5, seed=7)
        history = {}
        rng = random.Random(3)
        for _ in range(400):
            b = rng.randrange(64)
            data = bytes([rng.randrange(1, 256)]) * 4096
            c.write(b * 4096, data)
            history.setdefault(b, []).append(data)
        c.cut()
        result = server.finish()
        self.assertEqual(result["unflushed_blocks"], len(history))
        self.assertEqual(result["dropped"] + result["kept"], len(history))
        self.assertTrue(result["dropped"] and result["kept"] and result["kept_older_version"], result)
        for b, versions in history.items():
            self.assertIn(self.durable(b * 4096, 4096), [bytes(4096)] + versions[-nbd.MAX_VERSIONS:])

    def test_control_acknowledges_flush_and_fua_without_persisting(self):
        server, c = self.session(control=True)
        c.write(0, b"c" * 4096)
        c.flush()
        c.write(4096, b"c" * 4096, fua=True)
        self.assertEqual(c.read(0, 8192), b"c" * 8192)
        self.assertEqual(self.durable(0, 8192), bytes(8192))
        c.cut()
        self.assertEqual(server.finish()["dropped"], 2)
        self.assertEqual(self.durable(0, 8192), bytes(8192))

    def test_cut_at_write_kills_the_client_before_acknowledging(self):
        victim = subprocess.Popen(["sleep", "60"])
        trigger = nbd.CutTrigger()
        server, c = self.session(keep=0.0, trigger=trigger)
        c.write(0, b"1" * 4096)
        trigger.arm(victim.pid, 1)
        c.write(4096, b"2" * 4096)  # skipped
        c.sock.sendall(struct.pack(">IHHQQI", nbd.REQUEST_MAGIC, 0, nbd.CMD_WRITE, 99, 8192, 4096) + b"3" * 4096)
        self.assertEqual(victim.wait(10), -9)  # SIGKILLed at the third write, before its reply
        c.cut()
        result = server.finish()
        self.assertEqual((result["killed_at_write"], result["unflushed_blocks_at_kill"], result["dropped"]),
                         (True, 3, 3))
        self.assertEqual(self.durable(0, 12288), bytes(12288))

    @unittest.skipUnless(shutil.which("qemu-io"), "qemu-io not installed")
    def test_qemu_io_client(self):
        server = Server(self.backing, keep=0.0)
        out = subprocess.run(["qemu-io", "-f", "raw", "-t", "writeback", f"nbd://127.0.0.1:{server.port}/butler-edge",
                              "-c", "write -P 0xab 0 64k", "-c", "flush", "-c", "write -P 0xcd 64k 4k",
                              "-c", "read -P 0xcd 64k 4k"], capture_output=True, text=True, timeout=30)
        self.assertEqual(out.returncode, 0, out.stdout + out.stderr)
        self.assertNotIn("Pattern verification failed", out.stdout)
        result = server.finish()
        self.assertEqual(result["end"], "disconnect")
        self.assertEqual(self.durable(0, 65536), b"\xab" * 65536)


if __name__ == "__main__":
    unittest.main(verbosity=2)
