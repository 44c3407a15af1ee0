"""The `openai` back end: OpenAI's fine-tuning jobs API and generation with the result.

The authors used GPT-3 `davinci` through the legacy fine-tunes API, which no longer exists.
The current route, through the `openai` client, is:

1. write the seed triples in the format the base model needs (`training_record`): completion
   models (`babbage-002`, `davinci-002`) take {"prompt", "completion"}, the authors' format
   as is; chat models take {"messages": [user = prompt, assistant = completion]}, the same
   strings, so the same stop sequence and parser serve both;
2. upload it (`files.create`, purpose "fine-tune"), create the job
   (`fine_tuning.jobs.create`, one epoch), poll `fine_tuning.jobs.retrieve` until it ends;
3. generate with the fine-tuned model and moderate with the moderation endpoint.

`base_url` points the same code at any OpenAI-compatible server. The key comes from
`OPENAI_API_KEY`. Transient failures (429, 5xx, timeouts, dropped connections) are retried
here with exponential backoff; the client's own retries are switched off so that the two
never multiply.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TypeVar

from ip2p_lib.infra.errors import UserError
from ip2p_lib.infra.records import write_records
from ip2p_lib.text.backends import SamplingSettings
from ip2p_lib.text.format import make_completion, make_prompt

COMPLETION_MODELS: tuple[str, ...] = ("babbage-002", "davinci-002")
DEFAULT_BASE_MODEL = "gpt-4o-mini-2024-07-18"
KEY_VARIABLE = "OPENAI_API_KEY"
T = TypeVar("T")


def is_completion_model(model: str) -> bool:
    """True for the completion-style base models and their fine-tunes ("ft:davinci-002:...")."""
    return any(name in model for name in COMPLETION_MODELS)


def training_record(triple: Mapping[str, str], base_model: str) -> dict[str, Any]:
    """One line of the training file, in the format `base_model` needs."""
    prompt, completion = make_prompt(triple["input"]), make_completion(triple["edit"], triple["output"])
    if is_completion_model(base_model):
        return {"prompt": prompt, "completion": completion}
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}


def write_training_file(triples: Sequence[Mapping[str, str]], path: str | Path, base_model: str) -> Path:
    """The JSONL training file for `base_model`."""
    return write_records((training_record(t, base_model) for t in triples), path)


def make_client(api_key: str | None = None, base_url: str | None = None, timeout: float = 60.0) -> Any:
    """An `openai.OpenAI` client with its own retries off (see `with_backoff`)."""
    import openai

    key = api_key or os.environ.get(KEY_VARIABLE)
    if not key:
        raise UserError(
            f"no OpenAI API key: set the environment variable {KEY_VARIABLE} (and --base-url for an "
            "OpenAI-compatible server); notebook 01 skips its OpenAI cells without it"
        )
    return openai.OpenAI(api_key=key, base_url=base_url, timeout=timeout, max_retries=0)


def with_backoff(call: Callable[[], T], retries: int = 5, base: float = 1.0, cap: float = 60.0,
                 log: Callable[[str], None] | None = None) -> T:
    """`call()`, retried up to `retries` times on 429, 5xx, timeouts and connection errors,
    waiting base * 2**attempt seconds (with up to 10 % jitter, at most `cap`) in between."""
    import openai

    transient = (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError)
    for attempt in range(retries + 1):
        try:
            return call()
        except transient as err:
            if attempt == retries:
                raise UserError(f"the API kept failing after {retries} retries: {type(err).__name__}: {err}") from None
            wait = min(cap, base * 2**attempt) * (1 + 0.1 * random.random())
            if log:
                log(f"{type(err).__name__}; retry {attempt + 1}/{retries} in {wait:.2f} s")
            time.sleep(wait)
    raise AssertionError("unreachable")


class OpenAIBackend:
    """Generation and moderation through the OpenAI API (or an OpenAI-compatible server)."""

    name = "openai"

    def __init__(self, model: str, api_key: str | None = None, base_url: str | None = None, timeout: float = 60.0,
                 retries: int = 5, backoff_base: float = 1.0, workers: int = 4,
                 moderation_model: str | None = "omni-moderation-latest", log: Callable[[str], None] | None = None) -> None:
        self.model = model
        self.client = make_client(api_key, base_url, timeout)
        self.retries, self.backoff_base, self.workers = retries, backoff_base, workers
        self.moderation_model = moderation_model  # None: no moderation (a server without the endpoint)
        self.log = log
        self.retried: list[str] = []  # what was retried, for the curious and the tests

    def _call(self, fn: Callable[[], T]) -> T:
        return with_backoff(fn, self.retries, self.backoff_base, log=self._note)

    def _note(self, message: str) -> None:
        self.retried.append(message)
        if self.log:
            self.log(message)

    def _complete_one(self, prompt: str, s: SamplingSettings) -> str | None:
        import openai

        common = dict(model=self.model, temperature=s.temperature, top_p=s.top_p, frequency_penalty=s.frequency_penalty,
                      presence_penalty=s.presence_penalty, max_tokens=s.max_tokens, stop=[s.stop])
        try:
            if is_completion_model(self.model):
                response = self._call(lambda: self.client.completions.create(prompt=prompt, **common))
                text = response.choices[0].text
            else:
                messages = [{"role": "user", "content": prompt}]
                response = self._call(lambda: self.client.chat.completions.create(messages=messages, **common))
                text = response.choices[0].message.content
        except openai.BadRequestError as err:  # this prompt only (e.g. refused): no triple, carry on
            self._note(f"request refused: {err}")
            return None
        return None if text is None else text.split(s.stop)[0]

    def complete(self, prompts: Sequence[str], settings: SamplingSettings = SamplingSettings(),
                 seeds: Sequence[int] | None = None) -> list[str | None]:
        """One completion per prompt, `workers` requests in flight at a time. `seeds` are
        ignored: hosted sampling cannot be seeded exactly, so a resumed OpenAI run writes the
        same captions in the same order only as far as the API answers the same way."""
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool:
            return list(pool.map(lambda p: self._complete_one(p, settings), prompts))

    def moderate(self, texts: Sequence[str]) -> list[bool]:
        """The moderation endpoint's `flagged` for each text (all False when switched off)."""
        if not self.moderation_model or not texts:
            return [False] * len(texts)
        response = self._call(lambda: self.client.moderations.create(model=self.moderation_model, input=list(texts)))
        return [bool(r.flagged) for r in response.results]


def finetune_openai(
    triples: Sequence[Mapping[str, str]],
    base_model: str = DEFAULT_BASE_MODEL,
    work_dir: str | Path = "runs/openai",
    epochs: int = 1,
    suffix: str | None = "ip2p",
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    retries: int = 5,
    backoff_base: float = 1.0,
    poll_interval: float = 15.0,
    max_wait: float = 6 * 3600,
    progress: bool = True,
) -> str:
    """Upload the triples, run a fine-tuning job on `base_model` and return the new model's name.

    Polls the job every `poll_interval` seconds and shows its status and trained tokens; a
    failed or cancelled job, or one still running after `max_wait`, is a `UserError` naming
    the job id (so it can be looked up, or polled again with `wait_for_job`)."""
    client = make_client(api_key, base_url, timeout)
    path = write_training_file(triples, Path(work_dir) / f"train_{base_model.replace(':', '_')}.jsonl", base_model)
    call = lambda fn: with_backoff(fn, retries, backoff_base)  # noqa: E731
    with path.open("rb") as f:
        uploaded = call(lambda: client.files.create(file=(path.name, f.read()), purpose="fine-tune"))
    method = {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": epochs}}}
    job = call(lambda: client.fine_tuning.jobs.create(model=base_model, training_file=uploaded.id, method=method,
                                                       suffix=suffix))
    return wait_for_job(client, job.id, poll_interval, max_wait, progress, retries, backoff_base)


def wait_for_job(client: Any, job_id: str, poll_interval: float = 15.0, max_wait: float = 6 * 3600,
                 progress: bool = True, retries: int = 5, backoff_base: float = 1.0) -> str:
    """Poll a fine-tuning job until it ends; return its `fine_tuned_model`."""
    from tqdm.auto import tqdm

    start = time.monotonic()
    bar = tqdm(desc=f"fine-tuning job {job_id}", unit=" polls", disable=not progress)
    status = None
    while True:
        job = with_backoff(lambda: client.fine_tuning.jobs.retrieve(job_id), retries, backoff_base)
        bar.update()
        bar.set_postfix(status=job.status, trained_tokens=getattr(job, "trained_tokens", None) or 0)
        if job.status != status:
            status = job.status
            bar.write(f"job {job_id}: {status}")
        if status == "succeeded":
            bar.close()
            return job.fine_tuned_model
        if status in ("failed", "cancelled"):
            bar.close()
            error = getattr(job, "error", None)
            message = getattr(error, "message", None) or "no reason given"
            raise UserError(f"fine-tuning job {job_id} {status}: {message}")
        if time.monotonic() - start > max_wait:
            bar.close()
            raise UserError(f"fine-tuning job {job_id} still {status} after {max_wait:.0f} s; poll it again later")
        time.sleep(poll_interval)
