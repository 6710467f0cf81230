"""A fault-injecting proxy on 127.0.0.1 for the transfer fault tests.

Listens on one port for TCP and UDP and forwards both to a target port on
127.0.0.1, so an agent can advertise the proxy's address and every byte its
peers send it (gossip datagrams, gossip streams, transfer connections) passes
through here. In TCP connections that start with the transfer preamble ('S'),
the client-to-target direction gets one fault once `flip_at` bytes have gone
through, for the first `flips` such connections; later ones are forwarded
untouched. Everything else is forwarded byte for byte. The fault (`mode`):
  flip      one byte XOR-ed with 0x01
  replay    the first whole channel record starting at or after flip_at is sent twice
  reorder   that record and the next one are sent in swapped order
  truncate  half of that record is sent, then the connection is shut down (FIN)
The record modes parse the stream (8-byte preamble, then u32 big-endian
length and body per record, docs/protocol.md 2.4).

Only 127.0.0.1, bounded: the proxy stops (closing every socket it opened) on
stop(), and each thread ends when its sockets close.
"""

import selectors
import socket
import threading


class FlipProxy:
    def __init__(self, port, target_port, flip_at, flips=1, mode="flip"):
        assert mode in ("flip", "replay", "reorder", "truncate")
        self.port = port
        self.target_port = target_port
        self.mode = mode
        self.flip_at = flip_at
        self.flips_left = flips
        self.flipped = 0            # Bytes flipped so far.
        self.transfer_connections = 0
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sockets = []
        self.tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", port))
        self.tcp.listen(64)
        self.tcp.settimeout(0.2)
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", port))
        self.threads = [threading.Thread(target=self._accept, daemon=True),
                        threading.Thread(target=self._udp, daemon=True)]
        for t in self.threads:
            t.start()

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(timeout=5)
        with self.lock:
            for s in self.sockets:
                try:
                    s.close()
                except OSError:
                    pass
        self.tcp.close()
        self.udp.close()

    def _track(self, s):
        with self.lock:
            self.sockets.append(s)
        return s

    def _accept(self):
        while not self.stopping.is_set():
            try:
                client, _ = self.tcp.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self._track(client)
            try:
                upstream = self._track(socket.create_connection(("127.0.0.1", self.target_port), timeout=5))
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, to_target):
        flip_here = None  # Offset in this stream at which to flip, once known to be a transfer.
        seen = 0
        try:
            while not self.stopping.is_set():
                data = src.recv(65536)
                if not data:
                    break
                if to_target and seen == 0 and data[:1] == b"S":
                    with self.lock:
                        self.transfer_connections += 1
                        if self.flips_left > 0:
                            self.flips_left -= 1
                            flip_here = self.flip_at
                    if flip_here is not None and self.mode != "flip":
                        self._records(src, dst, data)
                        return
                if flip_here is not None and seen <= flip_here < seen + len(data):
                    b = bytearray(data)
                    b[flip_here - seen] ^= 0x01
                    data = bytes(b)
                    flip_here = None
                    with self.lock:
                        self.flipped += 1
                seen += len(data)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _records(self, src, dst, first):
        """Forwards a transfer stream record by record and applies the record fault once.
        Returns when the stream ends (or after a truncation); the caller shuts both sockets."""
        buf = bytearray(first)
        sent = 0     # Stream offset of buf[0].
        start = 8    # Offset in buf of the next record header; the preamble comes first.
        held = None  # reorder: the faulty record, waiting for its successor.
        while True:
            while len(buf) >= start + 4:
                end = start + 4 + int.from_bytes(buf[start:start + 4], "big")
                if len(buf) < end:
                    break
                if sent + start < self.flip_at:
                    start = end  # Before the fault point: passes as it is.
                    continue
                record = bytes(buf[start:end])
                dst.sendall(bytes(buf[:start]))
                if self.mode == "truncate":
                    # Half a record, then FIN; keep the other direction open so that the
                    # target reads the end of the stream (not a reset) and answers it.
                    dst.sendall(record[:len(record) // 2])
                    dst.shutdown(socket.SHUT_WR)
                    with self.lock:
                        self.flipped += 1
                    while not self.stopping.is_set() and src.recv(65536):
                        pass  # Discarded until the client gives up.
                    return
                if self.mode == "reorder" and held is None:
                    held = record
                    sent += end
                    del buf[:end]
                    start = 0
                    continue
                dst.sendall(record + record if self.mode == "replay" else record + held)
                dst.sendall(bytes(buf[end:]))
                with self.lock:
                    self.flipped += 1
                while not self.stopping.is_set():  # The fault is done: plain forwarding.
                    data = src.recv(65536)
                    if not data:
                        return
                    dst.sendall(data)
                return
            k = min(start, len(buf))
            dst.sendall(bytes(buf[:k]))
            sent += k
            del buf[:k]
            start -= k
            data = src.recv(65536)
            if not data or self.stopping.is_set():
                dst.sendall(bytes(buf))
                return
            buf += data

    def _udp(self):
        # One upstream socket per client address, so replies find their way back.
        sel = selectors.DefaultSelector()
        sel.register(self.udp, selectors.EVENT_READ, None)
        upstream = {}
        while not self.stopping.is_set():
            for key, _ in sel.select(timeout=0.2):
                try:
                    if key.data is None:
                        data, client = self.udp.recvfrom(65536)
                        up = upstream.get(client)
                        if up is None:
                            up = self._track(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
                            up.bind(("127.0.0.1", 0))
                            up.connect(("127.0.0.1", self.target_port))
                            upstream[client] = up
                            sel.register(up, selectors.EVENT_READ, client)
                        up.send(data)
                    else:
                        data = key.fileobj.recv(65536)
                        self.udp.sendto(data, key.data)
                except OSError:
                    pass
        sel.close()
