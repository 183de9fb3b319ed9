"""Take a tuned model anywhere, and look across runs.

- ``export_merged`` / ``export_gguf``: a standalone transformers folder, or a GGUF file with an
  Ollama Modelfile, that reproduce the run's answers (``describe_export`` says what will happen).
- ``push_to_hub``: upload an export (token from HF_TOKEN).
- ``compare_runs`` / ``compare_figure`` / ``save_loss_plot`` / ``tracking_callbacks``:
  experiment tracking.
- ``multi_gpu_command`` / ``accelerate_config``: the same training across GPUs and machines.

The package knows nothing of Gradio; the UI calls these functions.
"""

from .chat_templates import modelfile_text, ollama_template, run_chat_template
from .distributed import (BACKENDS, accelerate_config, config_multi_gpu_command,
                          multi_gpu_command, write_accelerate_config, write_presets)
from .gguf_export import GGUF_TYPES, check_gguf_target, export_gguf, gguf_support, write_gguf
from .hub import push_to_hub, require_token
from .merged import (DTYPES, ExportResult, Merged, check_merged_target, describe_export,
                     export_merged, load_merged, save_merged)
from .tracking import (compare_figure, compare_runs, loss_figure, report_targets, run_curves,
                       save_loss_plot, tracking_callbacks)

__all__ = [
    "BACKENDS", "DTYPES", "ExportResult", "GGUF_TYPES", "Merged", "accelerate_config",
    "check_gguf_target", "check_merged_target", "compare_figure", "compare_runs",
    "config_multi_gpu_command", "describe_export", "export_gguf", "export_merged", "gguf_support",
    "load_merged", "loss_figure", "modelfile_text", "multi_gpu_command", "ollama_template",
    "push_to_hub", "report_targets", "require_token", "run_chat_template", "run_curves",
    "save_loss_plot", "save_merged", "tracking_callbacks", "write_accelerate_config", "write_gguf",
    "write_presets",
]
