"""A scripted OpenAI-compatible chat server on 127.0.0.1 for tests (and the speed benchmark).

LiteLLM talks to it over real HTTP (``openai/<name>`` with ``api_base=server.url``). A *script*
decides each reply: ``script(body: dict, n: int) -> Reply`` where ``body`` is the request JSON and
``n`` counts requests from 1. Every request body is kept in ``server.requests``.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


@dataclass
class Reply:
    content: str | None = None  # message content of a 200 reply
    status: int = 200
    headers: dict = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before answering (a hang past the client's timeout)
    body: str | None = None  # raw body, overrides content


def completion_body(content: str, model: str = "scripted") -> str:
    return json.dumps(
        {
            "id": "chatcmpl-scripted",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }
    )


class ScriptedServer:
    def __init__(self, script: Callable[[dict, int], Reply]):
        self.script = script
        self.requests: list[dict] = []
        self.auth: list[str | None] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b"{}"
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = {}
                with server._lock:
                    server.requests.append(body)
                    server.auth.append(self.headers.get("Authorization"))
                    n = len(server.requests)
                reply = server.script(body, n)
                if reply.delay:
                    time.sleep(reply.delay)
                data = (reply.body if reply.body is not None else (
                    completion_body(reply.content or "") if reply.status == 200
                    else json.dumps({"error": {"message": f"scripted {reply.status}", "type": "scripted"}})
                )).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in reply.headers.items():
                        self.send_header(k, str(v))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def __enter__(self) -> "ScriptedServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def prompts(self) -> list[str]:
        """The user message of each request, in arrival order."""
        out = []
        for b in self.requests:
            msgs = b.get("messages") or []
            out.append(next((m.get("content", "") for m in reversed(msgs) if m.get("role") == "user"), ""))
        return out


def serve(script: Callable[[dict, int], Reply]) -> ScriptedServer:
    return ScriptedServer(script)


if __name__ == "__main__":  # a quick manual server: answers {} to everything
    with serve(lambda body, n: Reply("{}")) as s:
        print(s.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass


# ----------------------------------------------------------------------------- tiny datasets for tag tests
def make_items(folder, rows, domains=("food", "kitchen"), ids=None):
    """Write ``folder/items.parquet`` (ITEMS contract) and a ``data split`` manifest naming its fingerprint.

    ``rows``: list of (domain, title) or (domain, title, description); X items must come first.
    """
    from pathlib import Path

    import pyarrow as pa

    from temacli import artifacts
    from temacli.data.dataset import ITEMS

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    n_x = sum(1 for r in rows if r[0] == domains[0])
    cols = {
        "item": pa.array(range(len(rows)), pa.int32()),
        "item_id": pa.array(list(ids) if ids is not None else [f"A{i:04d}" for i in range(len(rows))]),
        "domain": pa.array([r[0] for r in rows]),
        "domain_idx": pa.array([domains.index(r[0]) for r in rows], pa.int8()),
        "title": pa.array([r[1] for r in rows]),
    }
    if any(len(r) > 2 for r in rows):
        cols["description"] = pa.array([r[2] if len(r) > 2 else None for r in rows], pa.string())
    path = artifacts.write_table(pa.table(cols), folder / "items.parquet", ITEMS)
    fp = artifacts.fingerprint(path)
    manifest = artifacts.build_manifest(
        "data split", {}, outputs={"items": {"path": "items.parquet", "fingerprint": fp}},
        counts={"domains": list(domains), "n_items_x": n_x, "n_items_y": len(rows) - n_x,
                "rows_train": 0, "rows_valid": 0, "rows_test": 0},
        dataset_fingerprint="sha256:" + "0" * 64,
    )
    artifacts.write_manifest(folder, manifest)
    return path


FOOD = [
    ("food", "Lavazza Espresso Italiano Whole Bean Coffee, 2.2 lb"),
    ("food", "Barilla Spaghetti Pasta, 16 oz"),
    ("food", "McCormick Ground Cinnamon", "A warm sweet spice for baking"),
    ("food", "Twinings English Breakfast Black Tea, 100 bags"),
    ("food", ""),
    ("food", "Organic Gluten-Free Penne Pasta"),
]
KITCHEN = [
    ("kitchen", "Lodge Cast Iron Skillet, 12 inch"),
    ("kitchen", "OXO Good Grips Coffee Grinder"),
    ("kitchen", "Pyrex Glass Baking Dish"),
    ("kitchen", "Stainless Steel Tea Kettle"),
]


def write_tag_list(path, domain, tags):
    """A DOMAIN_TAGS file with a ``tags generate`` manifest (as if generated)."""
    import pyarrow as pa

    from temacli import artifacts
    from temacli.tags.store import DOMAIN_TAGS

    t = pa.table({"domain": [domain] * len(tags), "tag": list(tags), "votes": pa.array([3] * len(tags), pa.int32()),
                  "runs": pa.array([3] * len(tags), pa.int32()), "mean_score": pa.array([0.8] * len(tags), pa.float32())})
    artifacts.write_table(t, path, DOMAIN_TAGS)
    artifacts.write_manifest(path, artifacts.build_manifest(
        "tags generate", {"domain": domain}, outputs={"domain_tags": {"fingerprint": artifacts.fingerprint(path)}}))
    return path


def chat_user(body: dict) -> str:
    return next((m.get("content", "") for m in reversed(body.get("messages") or []) if m.get("role") == "user"), "")


def item_ids_and_texts(prompt: str):
    """[(id, text)] of the <item id="k">text</item> lines of a match prompt."""
    import re

    return [(int(m.group(1)), m.group(2)) for m in re.finditer(r'<item id="(\d+)">(.*?)</item>', prompt)]


def tags_of_prompt(prompt: str) -> list[str]:
    lines = prompt.split("Tags (use only these, spelled exactly as written):\n", 1)[1].split("\nItems.", 1)[0]
    return [l[2:] for l in lines.splitlines() if l.startswith("- ")]


def keyword_scorer(body: dict) -> str:
    """A scripted 'model' for match prompts: 90 when a tag word is in the item text, else 5."""
    prompt = chat_user(body)
    tags = tags_of_prompt(prompt)
    out = []
    for k, text in item_ids_and_texts(prompt):
        low = text.lower()
        out.append({"id": k, "scores": {t: (90 if any(w in low for w in t.split()) else 5) for t in tags}})
    return json.dumps({"items": out})
