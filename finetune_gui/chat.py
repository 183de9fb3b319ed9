"""Chat with a base model or a tuned run, always through the run's own training template."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from . import models, runs
from .config import GenerationConfig, RunConfig
from .data import Example, Turn
from .errors import FinetuneError
from .generation import sampling_kwargs
from .messages import Message
from .plan import resolve_plan
from .templates import TemplateSpec, encode_segments, segments, stop_token_ids


def messages_to_example(messages: list[dict]) -> Example:
    """OpenAI-style history ending in a user message → an Example whose last turn is open."""
    system, turns, pending = "", [], None
    for msg in messages:
        role, content = msg.get("role"), msg.get("content")
        if not isinstance(content, str):
            content = str(content or "")
        if role == "system":
            system = content
        elif role == "user":
            if pending is not None:  # two user messages in a row: join them
                pending += "\n\n" + content
            else:
                pending = content
        elif role == "assistant" and pending is not None:
            turns.append(Turn(pending, "", content))
            pending = None
    if pending is None or not pending.strip():
        raise FinetuneError(Message("chat.no_question"))
    turns.append(Turn(pending, "", ""))
    return Example(turns, system=system)


# A text longer than this many characters per token of room cannot fit (real text runs at
# 2-5): refused before it is even tokenised, so a huge paste costs nothing.
MAX_CHARS_PER_TOKEN = 8
MAX_MESSAGE_CHARS = 200_000   # what the chat box accepts at all (the context check follows)
DEFAULT_CONTEXT = 2048     # a model config that names no context length


@dataclass
class FittedPrompt:
    """The prompt's tokens after fitting the conversation into the model's context."""
    ids: list[int]
    dropped_turns: int = 0   # the oldest question/answer pairs left out to make room


def context_length(model) -> int:
    """How many positions the model was built for (prompt and answer together)."""
    limit = getattr(models.text_config(model.config), "max_position_embeddings", None)
    return limit if isinstance(limit, int) and limit > 0 else DEFAULT_CONTEXT


class ChatEngine:
    """A loaded model (optionally with a LoRA adapter) that answers with the run's template.

    One generation runs at a time per engine: switching the adapter off for a base-model
    answer changes shared module state, so the engine serialises calls with a lock.
    """

    def __init__(self, model, tokenizer, config: RunConfig, *, has_adapter: bool,
                 source: str):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.config = config
        self.spec = TemplateSpec.from_data_config(config.data)
        self.spec.check(tokenizer)
        self.has_adapter = has_adapter
        self.merged = False
        self.source = source
        self._lock = threading.Lock()
        self._stop_ids = stop_token_ids(tokenizer, getattr(model, "generation_config", None))

    @classmethod
    def from_run(cls, run_dir: str | Path) -> "ChatEngine":
        from peft import PeftModel
        paths, config = runs.find_run(run_dir)
        model, tokenizer = models.load_model(config.model, for_training=False,
                                             plan=resolve_plan(config))
        model = PeftModel.from_pretrained(model, str(paths.adapter))
        return cls(model, tokenizer, config, has_adapter=True, source=str(paths.root))

    @classmethod
    def from_config(cls, config: RunConfig) -> "ChatEngine":
        model, tokenizer = models.load_model(config.model, for_training=False,
                                             plan=resolve_plan(config))
        return cls(model, tokenizer, config, has_adapter=False, source=config.model.name_or_path)

    def merge(self) -> None:
        """Fold the adapter into the base weights for faster answers (kept reversible).

        Not into 4-bit or 8-bit layers: merging re-quantises them (the tuned model drifts
        from what trained) and un-merging for a base answer drifts the base each time; the
        adapter then stays a separate, exact branch."""
        if self.has_adapter and not self.merged and not models.has_quantized_layers(self.model):
            with self._lock:
                self.model.merge_adapter()
                self.merged = True

    @contextlib.contextmanager
    def using(self, use_adapter: bool = True):
        """Hold the engine for one inference job, with the adapter on or off."""
        with self._lock, torch.inference_mode():
            if self.has_adapter and not use_adapter:
                with self.model.disable_adapter():
                    yield self.model
                self.merged = False  # peft unmerges the layers to answer without the adapter
            else:
                yield self.model

    def prompt_ids(self, messages: list[dict]) -> list[int]:
        return self.example_prompt_ids(messages_to_example(messages))

    def fit_prompt(self, messages: list[dict], max_new_tokens: int) -> FittedPrompt:
        """The conversation's prompt within the context, the oldest turns dropped first;
        a last message (with the system prompt) that cannot fit alone is refused."""
        context = context_length(self.model)
        room = context - max_new_tokens
        if room < 16:
            raise FinetuneError(Message("chat.no_room", tokens=max_new_tokens, context=context))
        example = messages_to_example(messages)
        for start in range(len(example.turns)):
            turns = example.turns[start:]
            chars = len(example.system) + sum(len(t.instruction) + len(t.input) + len(t.output)
                                              for t in turns)
            if chars > room * MAX_CHARS_PER_TOKEN:
                continue
            ids = self.example_prompt_ids(Example(turns, system=example.system))
            if len(ids) <= room:
                return FittedPrompt(ids, start)
        last = example.turns[-1]
        size = len(last.instruction) + len(example.system)
        raise FinetuneError(Message("chat.too_long_system" if example.system else "chat.too_long",
                                    size=f"{size:,}", context=f"{context:,}",
                                    tokens=max_new_tokens))

    def example_prompt_ids(self, example: Example) -> list[int]:
        """The tokens that ask ``example``'s last turn, in the run's template."""
        parts = segments(example, self.spec, self.tokenizer, for_generation=True)
        return encode_segments(parts, self.tokenizer).input_ids

    def _generate_kwargs(self, params: GenerationConfig) -> dict:
        return dict(sampling_kwargs(params), eos_token_id=self._stop_ids,
                    use_cache=True,  # a model loaded for training has it off
                    pad_token_id=self.tokenizer.pad_token_id)

    def answer_examples(self, examples: list[Example], params: GenerationConfig, *,
                        use_adapter: bool = True) -> list[str]:
        """Answer each example's open last turn, all in one left-padded batch (the KV cache
        and the stop tokens as in ``stream``; finished rows only pad until all are done)."""
        if not examples:
            return []
        rows = self.generate_batch([self.example_prompt_ids(e) for e in examples], params,
                                   use_adapter=use_adapter)
        return [self.tokenizer.decode(row, skip_special_tokens=True).strip() for row in rows]

    def generate_batch(self, prompts: list[list[int]], params: GenerationConfig, *,
                       use_adapter: bool = True, stopping_criteria: list | None = None
                       ) -> list[list[int]]:
        """The new tokens for each prompt, generated together in one left-padded batch.
        One prompt alone is exactly ``stream``'s generation (no padding at all)."""
        from transformers import StoppingCriteriaList
        width = max(len(p) for p in prompts)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None \
            else self._stop_ids[0]
        ids = torch.full((len(prompts), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, p in enumerate(prompts):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        kwargs = self._generate_kwargs(params)
        if stopping_criteria:
            kwargs["stopping_criteria"] = StoppingCriteriaList(stopping_criteria)
        with self.using(use_adapter):
            ids, mask = ids.to(self.model.device), mask.to(self.model.device)
            out = self.model.generate(input_ids=ids, attention_mask=mask, **kwargs)
        return [row[width:] for row in out.tolist()]

    @property
    def stop_ids(self) -> list[int]:
        """The tokens that end an answer (the template's end of turn and the model's EOS)."""
        return list(self._stop_ids)

    def stream(self, prompt: list[dict] | FittedPrompt, params: GenerationConfig | None = None,
               *, use_adapter: bool = True) -> Iterator[str]:
        """Yield the answer so far, growing token by token. ``prompt`` is the conversation
        (fitted to the context here) or what ``fit_prompt`` made of it."""
        from transformers import StoppingCriteriaList, TextIteratorStreamer
        params = params or self.config.generation
        if not isinstance(prompt, FittedPrompt):
            prompt = self.fit_prompt(prompt, params.max_new_tokens)
        ids = torch.tensor([prompt.ids], device=self.model.device)
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)
        abandoned = threading.Event()   # the reader went away (e.g. the page was closed)
        kwargs = dict(input_ids=ids, attention_mask=torch.ones_like(ids), streamer=streamer,
                      stopping_criteria=StoppingCriteriaList([lambda *_a, **_k: abandoned.is_set()]),
                      **self._generate_kwargs(params))
        errors: list[BaseException] = []

        def generate() -> None:
            try:
                with torch.inference_mode():
                    if self.has_adapter and not use_adapter:
                        with self.model.disable_adapter():
                            self.model.generate(**kwargs)
                    else:
                        self.model.generate(**kwargs)
            except BaseException as exc:  # surfaced to the caller below
                errors.append(exc)
                streamer.end()

        with self._lock:
            worker = threading.Thread(target=generate, name="generate", daemon=True)
            worker.start()
            text = ""
            try:
                for piece in streamer:
                    text += piece
                    yield text
            finally:   # also when the caller stops reading: generation ends at the next token
                abandoned.set()
                worker.join()
            if self.merged and not use_adapter:
                self.merged = False  # peft unmerges the layers to answer without the adapter
        if errors:
            raise FinetuneError(Message("chat.failed", why=str(errors[0]).splitlines()[0][:300]))

    def answer(self, messages: list[dict], params: GenerationConfig | None = None, *,
               use_adapter: bool = True) -> str:
        text = ""
        for text in self.stream(messages, params, use_adapter=use_adapter):
            pass
        return text.strip()
