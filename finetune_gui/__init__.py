"""finetune_gui: LoRA/QLoRA fine-tuning of open LLMs from a local wizard, a CLI, or Python."""

import logging

# bitsandbytes looks for an optional CPU kernel on the Hub at import and warns when it is
# unreachable (always, offline); its built-in kernel is used instead, so the warning is noise.
logging.getLogger("bitsandbytes.backends.cpu.ops").setLevel(logging.ERROR)

__version__ = "0.1.0"
