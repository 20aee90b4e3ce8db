"""An HTTP endpoint that answers one byte at a time, for the webhook's deadline tests."""

from __future__ import annotations

import socket
import threading
import time


class TrickleEndpoint:
    """An endpoint that answers a byte every 0.2 s: after its headers (``body``)
    or within them (``headers``), for 20 s; counts the POSTs it got."""

    def __init__(self, where: str, status: int = 200) -> None:
        self.where, self.status, self.posts = where, status, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        self.posts += 1
        conn.recv(65536)
        head = b"HTTP/1.1 %d X\r\nContent-Length: 100\r\n\r\n" % self.status
        if self.where == "body":
            conn.sendall(head)
        for i in range(100):
            time.sleep(0.2)
            try:
                conn.sendall(head[i:i + 1] if self.where == "headers" else b"x")
            except OSError:
                return
        conn.close()
