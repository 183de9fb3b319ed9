"""Turn examples into exactly the tokens the model trains on, and prompts into what chat sends.

Training and chat both go through ``segments``/``encode_segments``, so a tuned model is always
asked in the very form it was taught. Only response segments (each ending in an end-of-turn
token so the model learns to stop) carry loss; prompts and padding are masked with -100.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import DataConfig
from .data import Example, Turn
from .errors import ConfigError
from .messages import Message

IGNORE_INDEX = -100

ALPACA_PREAMBLE = ("Below is an instruction that describes a task. "
                   "Write a response that appropriately completes the request.")
ALPACA_PREAMBLE_INPUT = ("Below is an instruction that describes a task, paired with an input "
                         "that provides further context. Write a response that appropriately "
                         "completes the request.")


@dataclass
class Segment:
    text: str
    trained: bool


@dataclass
class TemplateSpec:
    """The template settings a run trains with; saved with the run so chat reuses them."""
    name: str = "model"
    custom: str = ""
    system_prompt: str = ""

    @classmethod
    def from_data_config(cls, cfg: DataConfig) -> "TemplateSpec":
        spec = cls(cfg.template, cfg.custom_template, cfg.system_prompt)
        spec.check()
        return spec

    def check(self, tokenizer=None) -> None:
        if self.name == "custom":
            if "{instruction}" not in self.custom or "{output}" not in self.custom:
                raise ConfigError(Message("tpl.custom_fields"))
            if self.custom.index("{output}") < self.custom.index("{instruction}"):
                raise ConfigError(Message("tpl.custom_order"))
            try:
                self.custom.format(instruction="", input="", output="")
            except (KeyError, IndexError, ValueError) as exc:
                raise ConfigError(Message("tpl.custom_brace", why=exc)) from None
        if self.name == "model" and tokenizer is not None and not tokenizer.chat_template:
            raise ConfigError(Message("tpl.no_chat_template"))


def _user_text(turn: Turn) -> str:
    return f"{turn.instruction}\n\n{turn.input}" if turn.input else turn.instruction


def _eos(tokenizer) -> str:
    return tokenizer.eos_token or ""


def segments(example: Example, spec: TemplateSpec, tokenizer, *,
             for_generation: bool = False) -> list[Segment]:
    """Prompt and response pieces of one example in the chosen template.

    With ``for_generation`` the last turn's output is left out and the text ends where the
    model must start answering.
    """
    if example.text is not None:  # a document: no template, every token trained
        return [Segment(example.text + _eos(tokenizer), True)]
    system = spec.system_prompt or example.system
    turns = example.turns
    if spec.name == "alpaca":
        return _alpaca(turns, system, tokenizer, for_generation)
    if spec.name == "chatml":
        return _chatml(turns, system, tokenizer, for_generation)
    if spec.name == "custom":
        return _custom(turns, system, spec.custom, tokenizer, for_generation)
    if spec.name == "model":
        return _model(turns, system, tokenizer, for_generation)
    raise ConfigError(f"unknown template '{spec.name}'")


def _alpaca(turns, system, tokenizer, for_generation) -> list[Segment]:
    out: list[Segment] = []
    for i, turn in enumerate(turns):
        head = ""
        if i == 0:
            head = (system or (ALPACA_PREAMBLE_INPUT if turn.input else ALPACA_PREAMBLE)) + "\n\n"
        else:
            head = "\n\n"
        prompt = f"{head}### Instruction:\n{turn.instruction}\n\n"
        if turn.input:
            prompt += f"### Input:\n{turn.input}\n\n"
        prompt += "### Response:\n"
        out.append(Segment(prompt, False))
        if for_generation and i == len(turns) - 1:
            break
        out.append(Segment(turn.output + _eos(tokenizer), True))
    return out


def _chatml(turns, system, tokenizer, for_generation) -> list[Segment]:
    end = "<|im_end|>"
    # Where <|im_end|> is not one token, the tokenizer's EOS follows so generation can stop.
    stop = end if tokenizer.convert_tokens_to_ids(end) not in (None, tokenizer.unk_token_id) \
        else end + _eos(tokenizer)
    out: list[Segment] = []
    prefix = f"<|im_start|>system\n{system}{end}\n" if system else ""
    for i, turn in enumerate(turns):
        out.append(Segment(f"{prefix}<|im_start|>user\n{_user_text(turn)}{end}\n"
                           "<|im_start|>assistant\n", False))
        if for_generation and i == len(turns) - 1:
            break
        out.append(Segment(turn.output + stop, True))
        prefix = "\n"
    return out


def _custom(turns, system, template, tokenizer, for_generation) -> list[Segment]:
    out: list[Segment] = []
    head, _, tail = template.partition("{output}")
    for i, turn in enumerate(turns):
        prompt = head.format(instruction=turn.instruction, input=turn.input, output="")
        if i == 0 and system:
            prompt = system + "\n" + prompt
        out.append(Segment(prompt, False))
        if for_generation and i == len(turns) - 1:
            break
        out.append(Segment(turn.output + _eos(tokenizer), True))
        if tail.strip():
            out.append(Segment(tail.format(instruction=turn.instruction, input=turn.input,
                                           output=""), False))
    return out


def _model(turns, system, tokenizer, for_generation) -> list[Segment]:
    """Use the tokenizer's own chat template, split into prompt/answer by rendering prefixes."""
    if not tokenizer.chat_template:
        raise ConfigError(Message("tpl.no_chat_template"))
    messages = [{"role": "system", "content": system}] if system else []
    out: list[Segment] = []
    done = ""
    for i, turn in enumerate(turns):
        messages.append({"role": "user", "content": _user_text(turn)})
        prompt_text = tokenizer.apply_chat_template(messages, tokenize=False,
                                                    add_generation_prompt=True)
        if not prompt_text.startswith(done):
            raise ConfigError(Message("tpl.rewrites_turns"))
        out.append(Segment(prompt_text[len(done):], False))
        if for_generation and i == len(turns) - 1:
            break
        messages.append({"role": "assistant", "content": turn.output})
        full = tokenizer.apply_chat_template(messages, tokenize=False)
        if not full.startswith(prompt_text):
            raise ConfigError(Message("tpl.no_extend"))
        answer = full[len(prompt_text):]
        eos = _eos(tokenizer)
        if eos and eos not in answer:
            answer += eos
        # Train on the answer up to and including its end-of-turn token; the newline that
        # the template puts after it belongs to the next prompt.
        stripped = answer.rstrip("\n")
        out.append(Segment(stripped, True))
        if stripped != answer:
            out.append(Segment(answer[len(stripped):], False))
        done = full
    return out


@dataclass
class Encoded:
    input_ids: list[int]
    labels: list[int]
    truncated: bool

    @property
    def trained_tokens(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def adds_bos(tokenizer) -> bool:
    bos = tokenizer.bos_token_id
    if bos is None:
        return False
    ids = tokenizer("a")["input_ids"]
    return bool(ids) and ids[0] == bos


_ANCHOR = "\n"


def adds_space_prefix(tokenizer) -> bool:
    """SentencePiece-style tokenizers (Llama 2, Mistral, Gemma) mark the start of every text
    they encode with '▁', as if it began a new word."""
    cached = getattr(tokenizer, "_finetune_gui_space_prefix", None)
    if cached is None:
        pieces = tokenizer.convert_ids_to_tokens(tokenizer.encode("a", add_special_tokens=False))
        cached = bool(pieces) and isinstance(pieces[0], str) and pieces[0].startswith("\u2581")
        try:
            tokenizer._finetune_gui_space_prefix = cached
        except AttributeError:
            pass
    return cached


def continuation_ids(tokenizer, text: str) -> list[int]:
    """``text``'s tokens as they are inside a longer text: without the '▁' a SentencePiece
    tokenizer puts at the start of each encode call (which llama.cpp, Ollama and the chat
    template, tokenising the whole conversation, never see there). Encoded after an anchor
    that is then cut off; byte-level tokenizers need nothing of the kind."""
    if not adds_space_prefix(tokenizer):
        return tokenizer.encode(text, add_special_tokens=False)
    anchor = tokenizer.encode(_ANCHOR, add_special_tokens=False)
    ids = tokenizer.encode(_ANCHOR + text, add_special_tokens=False)
    if ids[:len(anchor)] == anchor:
        return ids[len(anchor):]
    return tokenizer.encode(text, add_special_tokens=False)


def encode_segments(parts: list[Segment], tokenizer, max_len: int | None = None) -> Encoded:
    """Token ids and labels for the pieces; prompt pieces get IGNORE_INDEX labels."""
    ids: list[int] = []
    labels: list[int] = []
    if parts and adds_bos(tokenizer) and not parts[0].text.startswith(tokenizer.bos_token):
        ids.append(tokenizer.bos_token_id)
        labels.append(IGNORE_INDEX)
    for i, part in enumerate(parts):
        piece = continuation_ids(tokenizer, part.text) if i else \
            tokenizer.encode(part.text, add_special_tokens=False)
        ids.extend(piece)
        labels.extend(piece if part.trained else [IGNORE_INDEX] * len(piece))
    truncated = max_len is not None and len(ids) > max_len
    if truncated:
        ids, labels = ids[:max_len], labels[:max_len]
    return Encoded(ids, labels, truncated)


def encode_example(example: Example, spec: TemplateSpec, tokenizer,
                   max_len: int | None = None) -> Encoded:
    return encode_segments(segments(example, spec, tokenizer), tokenizer, max_len)


def token_spans(parts: list[Segment], tokenizer, max_len: int | None = None
                ) -> list[tuple[str, str]]:
    """(text, 'trained'|'masked'|'cut') per token, for previews that show what is learned."""
    enc = encode_segments(parts, tokenizer)
    spans = []
    for pos, (tok_id, label) in enumerate(zip(enc.input_ids, enc.labels)):
        text = tokenizer.decode([tok_id])
        kind = "masked" if label == IGNORE_INDEX else "trained"
        if max_len is not None and pos >= max_len:
            kind = "cut"
        spans.append((text, kind))
    return spans


def example_spans(example: Example, spec: TemplateSpec, tokenizer, max_len: int
                  ) -> list[tuple[str, str]]:
    """What training sees of one example, token by token: a row cut at ``max_len``; a
    document (chunked, never cut) as its first chunk, whose first token nothing predicts."""
    spans = token_spans(segments(example, spec, tokenizer), tokenizer,
                        None if example.text is not None else max_len)
    if example.text is not None:
        spans = spans[:max_len]
        spans[:1] = [(text, "masked") for text, _ in spans[:1]]
    return spans


def stop_token_ids(tokenizer, model_config=None) -> list[int]:
    """Tokens that end an answer: EOS, <|im_end|> and the model's own end-of-turn ids."""
    ids: set[int] = set()
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
        ids.add(im_end)
    gen = getattr(model_config, "eos_token_id", None)
    if isinstance(gen, int):
        ids.add(gen)
    elif isinstance(gen, list):
        ids.update(gen)
    return sorted(ids)
