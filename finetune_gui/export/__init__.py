"""Take a tuned model anywhere, and look across runs.

- ``export_merged`` / ``export_gguf``: a standalone transformers folder, or a GGUF file with an
  Ollama Modelfile, that reproduce the run's answers (``describe_export`` says what will happen).
- ``export_gguf_lora``: the adapter alone as a llama.cpp LoRA, beside its base as GGUF.
- ``push_to_hub``: upload an export (token from HF_TOKEN).

Experiment tracking and run comparison live in ``finetune_gui.tracking``, multi-process
launch configs in ``finetune_gui.launch``: they belong to training, not to export.

The package knows nothing of Gradio; the UI calls these functions.
"""

from .chat_templates import modelfile_text, ollama_template, run_chat_template
from .gguf_export import GGUF_TYPES, check_gguf_target, export_gguf, gguf_support, write_gguf
from .gguf_lora import check_lora_target, export_gguf_lora
from .hub import push_to_hub, require_token
from .merged import (DTYPES, ExportResult, Merged, check_merged_target, describe_export,
                     export_merged, load_merged, save_merged)

__all__ = [
    "DTYPES", "ExportResult", "GGUF_TYPES", "Merged", "check_gguf_target", "check_lora_target",
    "check_merged_target", "describe_export", "export_gguf", "export_gguf_lora", "export_merged", "gguf_support", "load_merged",
    "modelfile_text", "ollama_template", "push_to_hub", "require_token", "run_chat_template",
    "save_merged", "write_gguf",
]
