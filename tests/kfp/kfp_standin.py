"""A stand-in for the Kubeflow Pipelines REST API (v2beta1) on 127.0.0.1 that records every request.

It answers just enough of the API for kfp.Client (healthz, experiments, pipelines, upload, runs, recurring runs) with
the response shapes of the real server; tests then assert on what the client sent.
"""

from __future__ import annotations

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


@dataclass
class Recorded:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes

    def json(self):
        return json.loads(self.body or b"{}")


@dataclass
class StandIn:
    server: ThreadingHTTPServer
    requests: list[Recorded] = field(default_factory=list)
    pipelines: dict = field(default_factory=dict)  # display_name -> pipeline_id

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def find(self, method: str, path_re: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and re.fullmatch(path_re, r.path)]


def _handler(state: StandIn):
    class H(BaseHTTPRequestHandler):
        def log_message(self, *a):  # quiet
            pass

        def _reply(self, obj, code=200):
            data = json.dumps(obj).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _record(self, method):
            u = urlparse(self.path)
            n = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(n) if n else b""
            rec = Recorded(method, u.path, parse_qs(u.query), {k.lower(): v for k, v in self.headers.items()}, body)
            state.requests.append(rec)
            return rec

        def do_GET(self):
            rec = self._record("GET")
            p = rec.path
            if p == "/apis/v2beta1/healthz":
                return self._reply({"multi_user": False})
            if p == "/apis/v2beta1/experiments":
                return self._reply({})
            if p == "/apis/v2beta1/pipelines":
                flt = json.loads(rec.query.get("filter", ["{}"])[0] or "{}")
                names = [x.get("stringValue") for x in flt.get("predicates", [])]
                found = [{"pipeline_id": state.pipelines[n], "display_name": n} for n in names if n in state.pipelines]
                return self._reply({"pipelines": found, "total_size": len(found)} if found else {})
            m = re.fullmatch(r"/apis/v2beta1/pipelines/([^/]+)/versions", p)
            if m:
                return self._reply({"pipeline_versions": [{"pipeline_id": m.group(1),
                                                           "pipeline_version_id": "pv-1"}], "total_size": 1})
            return self._reply({"error": f"stand-in: no GET {p}"}, 404)

        def do_POST(self):
            rec = self._record("POST")
            p = rec.path
            if p == "/apis/v2beta1/experiments":
                body = rec.json()
                return self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
            if p == "/apis/v2beta1/runs":
                body = rec.json()
                return self._reply({"run_id": "run-1", "experiment_id": body.get("experiment_id"),
                                    "display_name": body.get("display_name"), "state": "PENDING"})
            if p == "/apis/v2beta1/recurringruns":
                body = rec.json()
                return self._reply({"recurring_run_id": "rr-1", "experiment_id": body.get("experiment_id"),
                                    "display_name": body.get("display_name"), "mode": body.get("mode")})
            if p == "/apis/v2beta1/pipelines/upload":
                name = rec.query.get("name", ["?"])[0]
                state.pipelines[name] = "pl-1"
                return self._reply({"pipeline_id": "pl-1", "display_name": name})
            if p == "/apis/v2beta1/pipelines/upload_version":
                return self._reply({"pipeline_id": rec.query.get("pipelineid", ["?"])[0],
                                    "pipeline_version_id": "pv-2", "display_name": rec.query.get("name", ["?"])[0]})
            return self._reply({"error": f"stand-in: no POST {p}"}, 404)

    return H


def start() -> StandIn:
    state = StandIn(server=None)  # type: ignore[arg-type]
    state.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    threading.Thread(target=state.server.serve_forever, daemon=True).start()
    return state
