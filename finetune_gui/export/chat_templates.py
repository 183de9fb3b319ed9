"""The run's training template written for other tools: a Jinja chat template and an Ollama one.

``run_chat_template`` gives a Jinja template for ``tokenizer.chat_template`` (and the GGUF's
``tokenizer.chat_template``) that renders a conversation into exactly the text that
``templates.segments(..., for_generation=True)`` builds, so an exported model is asked in the
form it was taught. ``ollama_template`` gives the Go-template form for an Ollama Modelfile:
ChatML-style templates as a ``.Messages`` loop, alpaca/custom in the literal
``.System``/``.Prompt``/``.Response`` form.
"""

from __future__ import annotations

import json
import re
import string
from dataclasses import dataclass, field

from ..errors import FinetuneError
from ..messages import Message
from ..templates import ALPACA_PREAMBLE, TemplateSpec, adds_bos, stop_token_ids

IM_START, IM_END = "<|im_start|>", "<|im_end|>"


def _lit(text: str) -> str:
    """A Jinja string literal."""
    return json.dumps(text, ensure_ascii=False)


def _split_system(default: str) -> str:
    return ("{%- if messages and messages[0]['role'] == 'system' -%}"
            "{%- set system = messages[0]['content'] -%}{%- set loop_messages = messages[1:] -%}"
            "{%- else -%}"
            f"{{%- set system = {_lit(default)} -%}}{{%- set loop_messages = messages -%}}"
            "{%- endif -%}")


def _bos(tokenizer) -> str:
    return "{{- bos_token -}}" if adds_bos(tokenizer) else ""


def _chatml_stop(tokenizer) -> str:
    single = tokenizer.convert_tokens_to_ids(IM_END) not in (None, tokenizer.unk_token_id)
    return IM_END if single else IM_END + (tokenizer.eos_token or "")


def _python_format_to_jinja(text: str, content: str) -> str:
    """A Python format string over {instruction}/{input}/{output} as a Jinja expression."""
    parts = []
    for literal, name, _spec, _conv in string.Formatter().parse(text):
        if literal:
            parts.append(_lit(literal))
        if name == "instruction":
            parts.append(content)
        elif name is not None and name not in ("input", "output"):
            raise FinetuneError(Message("tpl.custom_brace", why=repr(name)))
    return " + ".join(parts) if parts else "''"


def run_chat_template(spec: TemplateSpec, tokenizer) -> str:
    """A Jinja chat template that renders prompts exactly as the run trained on them.

    A system message in the conversation is used as the system text; without one the run's
    ``data.system_prompt`` (or the template's own default) is used.
    """
    eos = tokenizer.eos_token or ""
    if spec.name == "model":
        if not tokenizer.chat_template:
            raise FinetuneError(Message("tpl.no_chat_template"))
        if not spec.system_prompt:
            return tokenizer.chat_template
        # Put the run's system prompt in front when the conversation brings none.
        return ("{%- if not messages or messages[0]['role'] != 'system' -%}"
                f"{{%- set messages = [{{'role': 'system', 'content': {_lit(spec.system_prompt)}}}]"
                " + messages -%}{%- endif -%}" + tokenizer.chat_template)
    if spec.name == "chatml":
        stop = _chatml_stop(tokenizer)
        return (_bos(tokenizer) + _split_system(spec.system_prompt)
                + f"{{%- if system -%}}{{{{- {_lit(IM_START + 'system' + chr(10))} + system + "
                  f"{_lit(IM_END + chr(10))} -}}}}{{%- endif -%}}"
                "{%- for message in loop_messages -%}"
                "{%- if message['role'] == 'user' -%}"
                f"{{{{- {_lit(IM_START + 'user' + chr(10))} + message['content'] + "
                f"{_lit(IM_END + chr(10))} -}}}}"
                "{%- elif message['role'] == 'assistant' -%}"
                f"{{{{- {_lit(IM_START + 'assistant' + chr(10))} + message['content'] + "
                f"{_lit(stop)} -}}}}{{%- if not loop.last -%}}{{{{- {_lit(chr(10))} -}}}}{{%- endif -%}}"
                "{%- endif -%}{%- endfor -%}"
                f"{{%- if add_generation_prompt -%}}{{{{- {_lit(IM_START + 'assistant' + chr(10))} -}}}}"
                "{%- endif -%}")
    if spec.name == "alpaca":
        # Chat sends no separate input, so the no-input preamble applies; the prompt part of a
        # turn ends with '### Response:' (the generation prompt is part of the user turn).
        return (_bos(tokenizer) + _split_system(spec.system_prompt or ALPACA_PREAMBLE)
                + "{{- system + '\\n\\n' -}}"
                "{%- for message in loop_messages -%}"
                "{%- if message['role'] == 'user' -%}"
                "{%- if not loop.first -%}{{- '\\n\\n' -}}{%- endif -%}"
                "{{- '### Instruction:\\n' + message['content'] + '\\n\\n### Response:\\n' -}}"
                "{%- elif message['role'] == 'assistant' -%}"
                f"{{{{- message['content'] + {_lit(eos)} -}}}}"
                "{%- endif -%}{%- endfor -%}")
    if spec.name == "custom":
        head, _, tail = spec.custom.partition("{output}")
        head_expr = _python_format_to_jinja(head, "message['content']")
        tail_expr = _python_format_to_jinja(tail, "ns.last_user") if tail.strip() else ""
        return (_bos(tokenizer) + _split_system(spec.system_prompt)
                + "{%- set ns = namespace(first=true, last_user='') -%}"
                "{%- for message in loop_messages -%}"
                "{%- if message['role'] == 'user' -%}"
                "{%- if ns.first and system -%}{{- system + '\\n' -}}{%- endif -%}"
                "{%- set ns.first = false -%}{%- set ns.last_user = message['content'] -%}"
                f"{{{{- {head_expr} -}}}}"
                "{%- elif message['role'] == 'assistant' -%}"
                f"{{{{- message['content'] + {_lit(eos)} -}}}}"
                + (f"{{{{- {tail_expr} -}}}}" if tail_expr else "")
                + "{%- endif -%}{%- endfor -%}")
    raise FinetuneError(f"unknown template '{spec.name}'")


# ---- Ollama ------------------------------------------------------------------------------------

@dataclass
class OllamaTemplate:
    template: str | None            # None: let Ollama use the GGUF's own chat template
    system: str = ""                # SYSTEM line (the default system prompt), if any
    stops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _go_literal(text: str) -> str:
    """Literal text inside a Go template: '{{' must not start an action."""
    return text.replace("{{", "{{ \"{{\" }}")


_CHATML_SYSTEM = re.compile(re.escape(IM_START) + r"system\n(.*?)" + re.escape(IM_END) + r"\n",
                            re.S)

CHATML_GO = ("{{- range .Messages }}" + IM_START + "{{ .Role }}\n{{ .Content }}" + IM_END
             + "\n{{ end }}" + IM_START + "assistant\n")


def _model_is_chatml(tokenizer) -> tuple[bool, str]:
    """Whether the tokenizer's own template is ChatML, and the default system text it adds."""
    probe = "PROBE-user-text"
    try:
        text = tokenizer.apply_chat_template([{"role": "user", "content": probe}], tokenize=False,
                                             add_generation_prompt=True)
    except Exception:  # a template that fails to render is simply not translated
        return False, ""
    bos = tokenizer.bos_token or ""
    body = text[len(bos):] if bos and text.startswith(bos) and adds_bos(tokenizer) else text
    system = ""
    match = _CHATML_SYSTEM.match(body)
    if match:
        system, body = match.group(1), body[match.end():]
    expected = f"{IM_START}user\n{probe}{IM_END}\n{IM_START}assistant\n"
    return body == expected, system


def ollama_template(spec: TemplateSpec, tokenizer, model_config=None) -> OllamaTemplate:
    """The run's template in Ollama's Go-template form, its default system text and stops."""
    stops = []
    for token_id in stop_token_ids(tokenizer, model_config):
        token = tokenizer.convert_ids_to_tokens(token_id)
        if token and token not in stops:
            stops.append(token)
    if spec.name in ("model", "chatml"):
        if spec.name == "chatml":
            ok, default_system = True, ""
        else:
            ok, default_system = _model_is_chatml(tokenizer)
        if ok:
            return OllamaTemplate(CHATML_GO, spec.system_prompt or default_system, stops)
        return OllamaTemplate(None, spec.system_prompt, stops, [
            "the model's chat template is not ChatML-style, so the Modelfile has no TEMPLATE: "
            "Ollama falls back to the chat template stored in the GGUF"])
    if spec.name == "alpaca":
        body = ("{{ if .System }}{{ .System }}{{ else }}" + _go_literal(ALPACA_PREAMBLE)
                + "{{ end }}\n\n### Instruction:\n{{ .Prompt }}\n\n### Response:\n{{ .Response }}")
        return OllamaTemplate(body, spec.system_prompt, stops + ["### Instruction:"], [
            "alpaca in Ollama's literal form: each turn repeats the preamble"])
    if spec.name == "custom":
        head, _, tail = spec.custom.partition("{output}")
        pieces = []
        for literal, name, _s, _c in string.Formatter().parse(head):
            pieces.append(_go_literal(literal))
            if name == "instruction":
                pieces.append("{{ .Prompt }}")
        body = "{{ if .System }}{{ .System }}\n{{ end }}" + "".join(pieces) + "{{ .Response }}"
        tail_text = "".join(_go_literal(lit) for lit, _n, _s, _c in string.Formatter().parse(tail))
        if tail.strip():
            body += tail_text
        return OllamaTemplate(body, spec.system_prompt, stops)
    raise FinetuneError(f"unknown template '{spec.name}'")


def _quote(text: str) -> str:
    if '"""' in text:
        raise FinetuneError(Message("export.modelfile_quote"))
    return '"""' + text + '"""'


def modelfile_text(gguf_name: str, spec: TemplateSpec, tokenizer, generation, model_config=None
                   ) -> tuple[str, list[str]]:
    """An Ollama Modelfile for ``gguf_name`` (beside it) and notes about its fidelity."""
    tpl = ollama_template(spec, tokenizer, model_config)
    lines = ["# Ollama Modelfile written by finetune_gui: `ollama create NAME -f Modelfile`",
             f"FROM ./{gguf_name}"]
    if tpl.template is not None:
        lines.append(f"TEMPLATE {_quote(tpl.template)}")
    if tpl.system:
        lines.append(f"SYSTEM {_quote(tpl.system)}")
    for stop in tpl.stops:
        lines.append(f"PARAMETER stop {json.dumps(stop, ensure_ascii=False)}")
    lines.append(f"PARAMETER temperature {generation.temperature:g}")
    if generation.temperature > 0:
        lines.append(f"PARAMETER top_p {generation.top_p:g}")
        lines.append(f"PARAMETER top_k {generation.top_k}")
    lines.append(f"PARAMETER repeat_penalty {generation.repetition_penalty:g}")
    lines.append(f"PARAMETER num_predict {generation.max_new_tokens}")
    return "\n".join(lines) + "\n", tpl.notes
