"""A loopback TCP relay that cuts the connections it carries on demand, as a dropped network
would: for the tests of streams resumed with Last-Event-ID (a browser's, the SDKs')."""

from __future__ import annotations

import contextlib
import socket
import threading


class CuttingProxy:
    """A TCP relay in front of the server that can cut every connection it carries, as a
    dropped network would. It notes each request's head."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.heads: list[bytes] = []
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                closed = self._closed
                if not closed:
                    self._open += [client, upstream]
            if closed:  # accepted as the proxy closed: nothing may outlive it
                client.close()
                upstream.close()
                return
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, requests: bool) -> None:
        try:
            while chunk := source.recv(65536):
                if requests and b"HTTP/1.1\r\n" in chunk:
                    self.heads.append(chunk.split(b"\r\n\r\n", 1)[0])
                sink.sendall(chunk)
        except OSError:
            pass
        finally:
            for end in (source, sink):
                with contextlib.suppress(OSError):
                    end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self._lock:
            cut, self._open = self._open, []
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.listener.close()
        self.cut()
