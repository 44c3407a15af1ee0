"""The openai back end against a fake OpenAI server of this test: the real `openai` client over
real HTTP on 127.0.0.1. The server speaks exactly the endpoints the back end uses (files,
fine-tuning jobs, completions, chat completions, moderations), plays scripted failures (429,
500, a response slower than the client's timeout), and runs a job queued -> running -> succeeded.
It serves a bounded number of requests for a bounded time, then stops itself."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ip2p_lib.infra.errors import UserError
from ip2p_lib.text.backends import SamplingSettings
from ip2p_lib.text.format import EDIT_END, PROMPT_END
from ip2p_lib.text.generate import generate_triples, read_done
from ip2p_lib.text.openai_backend import OpenAIBackend, finetune_openai, training_record

TRIPLES = [{"input": f"a red circle number {i}", "edit": "make it blue", "output": f"a blue circle number {i}"}
           for i in range(3)]
CLIENT_TIMEOUT = 0.4


class FakeOpenAI:
    """State and script of the fake server."""

    def __init__(self):
        self.requests: list[tuple[str, str, object]] = []  # (method, path, body)
        self.failures: list[str] = []  # "429" | "500" | "timeout", consumed by generation requests
        self.job_statuses = ["queued", "running", "running", "succeeded"]
        self.job_error = None
        self.polls = 0
        self.lock = threading.Lock()

    def completion_text(self, prompt: str) -> str:
        caption = prompt[: -len(PROMPT_END)]
        return "make it blue" + EDIT_END + caption.replace("red", "blue")


def make_handler(fake: FakeOpenAI):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean
            pass

        def _send(self, status: int, payload: dict) -> None:
            body = json.dumps(payload).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                pass

        def _body(self):
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                return json.loads(raw)
            except ValueError:
                return raw  # multipart upload

        def do_GET(self):
            with fake.lock:
                fake.requests.append(("GET", self.path, None))
            if self.path.startswith("/v1/fine_tuning/jobs/"):
                job_id = self.path.rsplit("/", 1)[1]
                with fake.lock:
                    status = fake.job_statuses[min(fake.polls, len(fake.job_statuses) - 1)]
                    fake.polls += 1
                return self._send(200, self._job(job_id, status))
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

        def _job(self, job_id, status):
            return {"id": job_id, "object": "fine_tuning.job", "model": "gpt-4o-mini-2024-07-18", "created_at": 0,
                    "status": status, "training_file": "file-1", "validation_file": None, "result_files": [],
                    "fine_tuned_model": "ft:gpt-4o-mini-2024-07-18:fake::job1" if status == "succeeded" else None,
                    "trained_tokens": 123 if status == "succeeded" else None, "finished_at": None, "seed": 0,
                    "organization_id": "org-fake", "hyperparameters": {"n_epochs": 1},
                    "error": fake.job_error if status == "failed" else None}

        def do_POST(self):
            body = self._body()
            with fake.lock:
                fake.requests.append(("POST", self.path, body))
            if self.path == "/v1/files":
                return self._send(200, {"id": "file-1", "object": "file", "bytes": len(body), "created_at": 0,
                                        "filename": "train.jsonl", "purpose": "fine-tune", "status": "processed"})
            if self.path == "/v1/fine_tuning/jobs":
                return self._send(200, self._job("ftjob-1", "queued"))
            if self.path == "/v1/moderations":
                texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
                return self._send(200, {"id": "modr-1", "model": body.get("model"), "results": [
                    {"flagged": "forbidden" in t, "categories": {}, "category_scores": {}} for t in texts]})
            if self.path in ("/v1/completions", "/v1/chat/completions"):
                with fake.lock:
                    failure = fake.failures.pop(0) if fake.failures else None
                if failure == "429":
                    return self._send(429, {"error": {"message": "slow down", "type": "rate_limit_exceeded"}})
                if failure == "500":
                    return self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                if failure == "timeout":
                    time.sleep(CLIENT_TIMEOUT * 2.5)
                if self.path == "/v1/completions":
                    return self._send(200, {"id": "cmpl-1", "object": "text_completion", "created": 0,
                                            "model": body["model"], "choices": [
                                                {"index": 0, "text": fake.completion_text(body["prompt"]),
                                                 "finish_reason": "stop", "logprobs": None}]})
                text = fake.completion_text(body["messages"][-1]["content"])
                return self._send(200, {"id": "chat-1", "object": "chat.completion", "created": 0, "model": body["model"],
                                        "choices": [{"index": 0, "finish_reason": "stop",
                                                     "message": {"role": "assistant", "content": text}}]})
            self._send(404, {"error": {"message": f"no route {self.path}", "type": "invalid_request_error"}})

    return Handler


@pytest.fixture
def server(monkeypatch):
    fake = FakeOpenAI()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(fake))
    httpd.daemon_threads = True
    httpd.timeout = 0.05
    stop = threading.Event()
    deadline = time.monotonic() + 60

    def serve():  # bounded: stops on request, after 500 requests, or after 60 s
        served = 0
        while not stop.is_set() and served < 500 and time.monotonic() < deadline:
            before = len(fake.requests)
            httpd.handle_request()
            served += len(fake.requests) > before

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-not-a-real-key")
    fake.base_url = f"http://127.0.0.1:{httpd.server_address[1]}/v1"
    yield fake
    stop.set()
    thread.join(timeout=5)
    httpd.server_close()


def _posts(fake, path):
    return [b for m, p, b in fake.requests if m == "POST" and p == path]


def test_training_file_format_follows_the_base_model():
    t = TRIPLES[0]
    prompt, completion = t["input"] + "\n##\n", "make it blue\n%%\n" + t["output"] + "\nEND"
    assert training_record(t, "davinci-002") == {"prompt": prompt, "completion": completion}
    assert training_record(t, "babbage-002") == {"prompt": prompt, "completion": completion}
    assert training_record(t, "gpt-4o-mini-2024-07-18") == {
        "messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}


def test_finetuning_job_uploads_creates_and_polls_to_success(server, tmp_path, capsys):
    name = finetune_openai(TRIPLES, "gpt-4o-mini-2024-07-18", tmp_path, base_url=server.base_url,
                           poll_interval=0.01, timeout=CLIENT_TIMEOUT * 5, backoff_base=0.01)
    assert name == "ft:gpt-4o-mini-2024-07-18:fake::job1"
    (upload,) = _posts(server, "/v1/files")
    assert b'name="purpose"' in upload and b"fine-tune" in upload
    assert upload.count(b'{"messages"') == 3  # the training file went up, chat format
    (job,) = _posts(server, "/v1/fine_tuning/jobs")
    assert job["model"] == "gpt-4o-mini-2024-07-18" and job["training_file"] == "file-1"
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 1
    assert server.polls == 4
    shown = capsys.readouterr()
    text = shown.out + shown.err
    assert text.index("queued") < text.index("running") < text.index("succeeded")


def test_failed_job_is_a_user_error_naming_the_job(server, tmp_path):
    server.job_statuses = ["queued", "failed"]
    server.job_error = {"code": "invalid_file", "message": "training file has 0 examples", "param": None}
    with pytest.raises(UserError, match="ftjob-1 failed: training file has 0 examples"):
        finetune_openai(TRIPLES, "davinci-002", tmp_path, base_url=server.base_url, poll_interval=0.01,
                        progress=False, backoff_base=0.01)


def test_generation_retries_429_500_and_timeout_with_the_paper_settings(server):
    server.failures = ["429", "500", "timeout"]
    backend = OpenAIBackend("ft:davinci-002:fake::x", base_url=server.base_url, timeout=CLIENT_TIMEOUT,
                            backoff_base=0.01, workers=1)
    prompt = "a red circle\n##\n"
    assert backend.complete([prompt]) == ["make it blue\n%%\na blue circle"]
    sent = _posts(server, "/v1/completions")
    assert len(sent) == 4  # 3 failures, then success: each failure retried once, by us only
    assert [m.split(";")[0] for m in backend.retried] == ["RateLimitError", "InternalServerError", "APITimeoutError"]
    assert sent[-1]["prompt"] == prompt
    settings = {k: sent[-1][k] for k in ("temperature", "top_p", "frequency_penalty", "presence_penalty", "max_tokens", "stop")}
    assert settings == {"temperature": 0.7, "top_p": 1.0, "frequency_penalty": 0.1, "presence_penalty": 0.0,
                        "max_tokens": 256, "stop": ["\nEND"]}


def test_retries_are_bounded(server):
    server.failures = ["500"] * 10
    backend = OpenAIBackend("ft:davinci-002:fake::x", base_url=server.base_url, timeout=CLIENT_TIMEOUT,
                            retries=2, backoff_base=0.01, workers=1)
    with pytest.raises(UserError, match="after 2 retries"):
        backend.complete(["a red circle\n##\n"])
    assert len(_posts(server, "/v1/completions")) == 3


def test_generation_at_scale_through_chat_model_with_moderation(server, tmp_path):
    backend = OpenAIBackend("ft:gpt-4o-mini-2024-07-18:fake::job1", base_url=server.base_url,
                            timeout=CLIENT_TIMEOUT * 5, backoff_base=0.01, workers=2)
    captions = ["a red circle", "a red square", "a forbidden red thing", "a red triangle"]
    stats = generate_triples(backend, captions, tmp_path / "o.jsonl", n=10, progress=False,
                             settings=SamplingSettings())
    records = read_done(tmp_path / "o.jsonl")
    assert sorted(r["input"] for r in records) == ["a red circle", "a red square", "a red triangle"]
    assert all(r["output"] == r["input"].replace("red", "blue") for r in records)
    chats = _posts(server, "/v1/chat/completions")
    assert len(chats) == 3 and chats[0]["messages"][0]["role"] == "user" and chats[0]["stop"] == ["\nEND"]
    mods = _posts(server, "/v1/moderations")
    assert mods[0]["input"] == captions and mods[0]["model"] == "omni-moderation-latest"  # inputs first
    assert len(mods) == 1 + 3  # then instruction + edited caption of each triple
    assert stats.rejected["flagged"] == 1


def test_missing_key_says_which_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(UserError, match="OPENAI_API_KEY"):
        OpenAIBackend("ft:x")
