/**
 * A small web app that tests run inside a sandbox (python3 standard library only) to exercise
 * service URLs: a page, server-sent events, a body echo, large downloads and a WebSocket echo.
 */

/** Where the app is written inside the sandbox. */
export const SERVICE_APP_PATH = "/srv/app.py";

/** Start it in the background on `port`; returns when it answers. */
export const startServiceApp = (port: number): string =>
  `nohup python3 ${SERVICE_APP_PATH} ${port} >/tmp/app-${port}.log 2>&1 &
for i in $(seq 1 100); do python3 -c "import socket; socket.create_connection(('127.0.0.1', ${port}), timeout=1)" 2>/dev/null && exit 0; sleep 0.05; done; cat /tmp/app-${port}.log; exit 1`;

export const SERVICE_APP = String.raw`
import base64, hashlib, json, socket, struct, sys, time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(sys.argv[1])
PAGE = b"""<!doctype html><html><head><title>sandbox app</title></head>
<body><h1 id="title">hello from the sandbox</h1><p id="port">port %d</p></body></html>""" % PORT

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_body(self, status, body, ctype="text/plain"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/":
            return self.send_body(200, PAGE, "text/html; charset=utf-8")
        if path == "/headers":
            return self.send_body(200, json.dumps(dict(self.headers)).encode(), "application/json")
        if path == "/sse":
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Connection", "close")
            self.end_headers()
            for i in range(3):
                self.wfile.write(("data: tick %d %f\n\n" % (i, time.time())).encode())
                self.wfile.flush()
                time.sleep(0.3)
            self.close_connection = True
            return
        if path == "/big":
            n = int(self.path.split("n=")[1]) if "n=" in self.path else 1 << 20
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            block = bytes(range(256)) * 256
            while n > 0:
                chunk = block[: min(n, len(block))]
                self.wfile.write(chunk)
                n -= len(chunk)
            return
        if path == "/ws":
            return self.websocket()
        return self.send_body(404, b"not found\n")

    def do_POST(self):
        h = hashlib.sha256()
        total = 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data = self.rfile.read(size)
                h.update(data)
                total += len(data)
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length", "0"))
            while left > 0:
                data = self.rfile.read(min(left, 1 << 16))
                if not data:
                    break
                h.update(data)
                total += len(data)
                left -= len(data)
        self.send_body(200, json.dumps({"bytes": total, "sha256": h.hexdigest()}).encode(), "application/json")

    def websocket(self):
        key = self.headers.get("Sec-WebSocket-Key", "")
        accept = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest()).decode()
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", accept)
        self.end_headers()
        self.wfile.flush()
        while True:
            head = self.rfile.read(2)
            if len(head) < 2:
                break
            opcode = head[0] & 0x0F
            length = head[1] & 0x7F
            if length == 126:
                length = struct.unpack(">H", self.rfile.read(2))[0]
            elif length == 127:
                length = struct.unpack(">Q", self.rfile.read(8))[0]
            mask = self.rfile.read(4) if head[1] & 0x80 else b"\0\0\0\0"
            data = bytearray(self.rfile.read(length))
            for i in range(len(data)):
                data[i] ^= mask[i % 4]
            if opcode == 8:
                self.wfile.write(b"\x88\x00")
                break
            if opcode == 9:
                opcode = 10
            reply = b"echo: " + bytes(data) if opcode == 1 else bytes(data)
            n = len(reply)
            if n < 126:
                frame = bytes([0x80 | opcode, n])
            elif n < 65536:
                frame = bytes([0x80 | opcode, 126]) + struct.pack(">H", n)
            else:
                frame = bytes([0x80 | opcode, 127]) + struct.pack(">Q", n)
            self.wfile.write(frame + reply)
            self.wfile.flush()
        self.close_connection = True

ThreadingHTTPServer.allow_reuse_address = True
ThreadingHTTPServer(("0.0.0.0", PORT), Handler).serve_forever()
`;
