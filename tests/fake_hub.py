"""A local stand-in of the Hugging Face Hub API, on a loopback port, for push tests without network.

It answers what ``HfApi.create_repo`` and ``HfApi.upload_folder`` call (repos/create, validate-yaml for
README.md's front matter, preupload, commit), takes every file as a "regular" upload (no LFS/xet),
and keeps the repositories created (with their request bodies) and the files received, byte for byte.
"""

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeHub:
    def __init__(self):
        self.calls, self.repos, self.files = [], {}, {}  # repos[repo] = create request; files[(repo, path)] = bytes
        hub = self

        class H(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, code, obj=None, headers=()):
                body = json.dumps(obj).encode() if obj is not None else b""
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            def _body(self):
                return self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))

            def do_HEAD(self):  # file_exists / hf_hub_download metadata: /{repo}/resolve/{rev}/{path}
                hub.calls.append(("HEAD", self.path))
                parts = self.path.lstrip("/").split("/")
                key = ("/".join(parts[:2]), "/".join(parts[4:])) if len(parts) > 4 and parts[2] == "resolve" else None
                if key in hub.files:  # metadata headers get_hf_file_metadata reads
                    return self._send(200, headers=[("X-Repo-Commit", "0123abcd" * 5), ("ETag", '"x"')])
                self._send(404, headers=[("X-Error-Code", "EntryNotFound")])  # -> file_exists() == False

            def do_GET(self):
                hub.calls.append(("GET", self.path))
                self._send(404, {"error": "not found"})

            def do_POST(self):
                body = self._body()
                p = self.path
                hub.calls.append(("POST", p))
                if p == "/api/repos/create":
                    d = json.loads(body)
                    rid = f"{d['organization']}/{d['name']}"
                    hub.repos[rid] = d
                    return self._send(200, {"url": f"{hub.url}/{rid}", "name": rid, "id": rid})
                if p == "/api/validate-yaml":  # README.md front matter check (upload_folder does it for README.md)
                    import yaml

                    text = json.loads(body)["content"]
                    try:
                        yaml.safe_load(text.split("---")[1] if text.startswith("---") else "")
                    except yaml.YAMLError as e:
                        return self._send(400, {"errors": [{"message": str(e)}]})
                    return self._send(200, {})
                if p.startswith("/api/models/") and "/preupload/" in p:
                    d = json.loads(body)
                    return self._send(
                        200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in d["files"]]}
                    )
                if p.startswith("/api/models/") and "/commit/" in p:
                    rid = p[len("/api/models/") :].split("/commit/")[0]
                    for line in body.decode().splitlines():
                        op = json.loads(line)
                        if op["key"] == "file":
                            hub.files[(rid, op["value"]["path"])] = base64.b64decode(op["value"]["content"])
                    return self._send(200, {"commitUrl": f"{hub.url}/{rid}/commit/0123abcd", "commitOid": "0123abcd" * 5})
                self._send(404, {"error": f"unhandled {p}"})

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *a):
        self.server.shutdown()
        self.server.server_close()
