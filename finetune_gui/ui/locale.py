"""The one locale table: every text the UI shows, in English and 简体中文.

Field help in English is the config's own metadata (``config.field_help``), so the CLI docs,
validation and the UI say the same thing; the Chinese help sits beside it
(``locale_fields``). The core's own sentences (``finetune_gui.messages``) and job phases are
here too, their Chinese in ``locale_core``: ``say`` and ``phase`` put them in a language.
``tests/test_ui_locale.py`` checks that every key exists in both languages with the same
placeholders.
"""

from __future__ import annotations

import dataclasses
import re

from ..config import SECTIONS, RunConfig, field_help
from ..messages import ENGLISH, Message
from ..evaluation.report import LABELS
from .locale_core import PHASES, ZH_MESSAGES, ZH_METRICS
from .locale_fields import FIELD_LABELS, ZH_HELP

LANGUAGES = {"en": "English", "zh": "简体中文"}

TABLE: dict[str, dict[str, str]] = {
    "app.title": {"en": "finetune_gui — LoRA / QLoRA fine-tuning", "zh": "finetune_gui —— LoRA / QLoRA 微调"},
    "window.quit_running": {"en": "A training job is running. Quit anyway? It is saved at a checkpoint first and can be resumed later.", "zh": "训练任务正在运行。仍要退出吗？退出前会先保存检查点，之后可以继续训练。"},
    "window.quit": {"en": "Quit", "zh": "退出"},
    "window.cancel": {"en": "Cancel", "zh": "取消"},
    "app.subtitle": {"en": "Model → Data → LoRA → Train → Evaluate → Chat → Export. Every tab edits the same run configuration as the command line.",
                     "zh": "模型 → 数据 → LoRA → 训练 → 评估 → 对话 → 导出。每个页签编辑的都是与命令行相同的运行配置。"},
    "tab.model": {"en": "1 · Model", "zh": "1 · 模型"},
    "tab.data": {"en": "2 · Data", "zh": "2 · 数据"},
    "tab.lora": {"en": "3 · LoRA", "zh": "3 · LoRA"},
    "tab.train": {"en": "4 · Train", "zh": "4 · 训练"},
    "tab.evaluate": {"en": "5 · Evaluate", "zh": "5 · 评估"},
    "tab.chat": {"en": "6 · Chat", "zh": "6 · 对话"},
    "tab.export": {"en": "7 · Export", "zh": "7 · 导出"},
    "range": {"en": "Range: {lo}–{hi}.", "zh": "范围：{lo}–{hi}。"},
    "range_min": {"en": "At least {lo}.", "zh": "最小 {lo}。"},
    "err.title": {"en": "Cannot do that", "zh": "无法完成"},
    "err.unexpected": {"en": "Unexpected problem ({kind}): {detail}. The app keeps running; details are in the server log.",
                       "zh": "意外问题（{kind}）：{detail}。应用仍在运行；详情见服务器日志。"},
    # header
    "preset.pick": {"en": "Preset", "zh": "预设"},
    "preset.load": {"en": "Load preset", "zh": "加载预设"},
    "preset.name": {"en": "Save current settings as", "zh": "将当前设置另存为"},
    "preset.save": {"en": "Save preset", "zh": "保存预设"},
    "preset.cli": {"en": "Copy as CLI command", "zh": "复制为命令行"},
    "preset.reset": {"en": "Reset to preset", "zh": "恢复为预设"},
    "recent.pick": {"en": "Recent", "zh": "最近使用"},
    "settings.not_restored": {"en": "Your settings from last time were not restored ({reason}): you start from the preset.",
                              "zh": "未能恢复你上次的设置（{reason}）：从预设开始。"},
    "preset.cli_label": {"en": "The same run from a terminal", "zh": "在终端中运行同样的训练"},
    "preset.none": {"en": "Choose a preset first.", "zh": "请先选择一个预设。"},
    "preset.need_name": {"en": "Give the preset a name.", "zh": "请为预设命名。"},
    "preset.loaded": {"en": "Loaded preset {path}.", "zh": "已加载预设 {path}。"},
    "preset.saved": {"en": "Saved preset {path}.", "zh": "已保存预设 {path}。"},
    "preset.exists": {"en": "{path} already exists: press Save again to replace it (the old file is kept as {path}.bak), or choose another name.",
                      "zh": "{path} 已存在：再次点击保存将替换它（旧文件保留为 {path}.bak），或换一个名字。"},
    # model tab
    "model.source": {"en": "Where the base model comes from", "zh": "基础模型来源"},
    "model.source_info": {"en": "The embedded model works offline; a Hub id needs internet (or a local cache).",
                          "zh": "内置模型可离线使用；Hub 模型需要联网（或本地缓存）。"},
    "model.source.embedded": {"en": "Embedded (SmolLM2-135M)", "zh": "内置（SmolLM2-135M）"},
    "model.source.hub": {"en": "Hugging Face Hub id", "zh": "Hugging Face Hub 模型名"},
    "model.source.folder": {"en": "Local folder", "zh": "本地文件夹"},
    "model.source.gguf": {"en": ".gguf file", "zh": ".gguf 文件"},
    "model.ph.embedded": {"en": "smollm2-135m-instruct", "zh": "smollm2-135m-instruct"},
    "model.ph.hub": {"en": "org/name, e.g. Qwen/Qwen2.5-0.5B-Instruct", "zh": "组织/名称，例如 Qwen/Qwen2.5-0.5B-Instruct"},
    "model.ph.folder": {"en": "/path/to/model folder with config.json", "zh": "/路径/到/含 config.json 的模型文件夹"},
    "model.ph.gguf": {"en": "/path/to/model.gguf, or upload it below", "zh": "/路径/到/model.gguf，或在下方上传"},
    "model.upload": {"en": "Upload a .gguf file", "zh": "上传 .gguf 文件"},
    "model.load": {"en": "Load model", "zh": "加载模型"},
    "model.not_loaded": {"en": "No model loaded yet. Press **Load model** (the embedded model takes a few seconds on a CPU).",
                         "zh": "尚未加载模型。请点击 **加载模型**（内置模型在 CPU 上只需几秒）。"},
    "model.loaded": {"en": "Loaded {name}", "zh": "已加载 {name}"},
    "model.progress.resolve": {"en": "Finding the model (a .gguf is converted once)…", "zh": "查找模型（.gguf 只需转换一次）…"},
    "model.progress.load": {"en": "Loading weights…", "zh": "加载权重…"},
    "model.progress.describe": {"en": "Reading the model card…", "zh": "读取模型信息…"},
    "model.hardware": {"en": "This machine", "zh": "本机硬件"},
    "model.refresh": {"en": "Refresh", "zh": "刷新"},
    "model.app_memory": {"en": "This app uses {mib} MiB of RAM", "zh": "本应用占用内存 {mib} MiB"},
    # data tab
    "data.upload": {"en": "…or upload a data file", "zh": "……或上传数据文件"},
    "data.load": {"en": "Load data", "zh": "加载数据"},
    "data.none": {"en": "No rows loaded yet: give a path and press **Load data**, or upload a file.",
                  "zh": "尚未加载数据：填写路径并点击 **加载数据**，或上传文件。"},
    "data.table": {"en": "Rows (click a row to edit it below; search with the magnifier)",
                   "zh": "数据行（点击某行可在下方编辑；用放大镜搜索）"},
    "data.row": {"en": "Row", "zh": "行号"},
    "data.row_json": {"en": "Row as JSON", "zh": "该行的 JSON"},
    "data.apply": {"en": "Apply edit", "zh": "应用修改"},
    "data.add": {"en": "Add row", "zh": "添加行"},
    "data.delete": {"en": "Delete row", "zh": "删除行"},
    "data.save": {"en": "Save data (keeps a backup)", "zh": "保存数据（保留备份）"},
    "data.saved": {"en": "Saved {path}.", "zh": "已保存 {path}。"},
    "data.backup": {"en": "The previous version is kept as {path}.", "zh": "旧版本保存在 {path}。"},
    "data.errors": {"en": "Problems, by row", "zh": "问题（按行）"},
    "data.summary": {"en": "**{rows} rows** · format **{fmt}**", "zh": "**{rows} 行** · 格式 **{fmt}**"},
    "data.has_errors": {"en": "{n} problem rows (listed below; they are skipped in training only after you fix or delete them — training refuses bad rows)",
                        "zh": "{n} 行有问题（见下方列表；训练会拒绝有问题的行，请修改或删除）"},
    "data.no_errors": {"en": "every row is valid", "zh": "所有行均有效"},
    "data.warnings": {"en": "{n} warnings (duplicates)", "zh": "{n} 条警告（重复行）"},
    "data.unsaved": {"en": "unsaved edits — press Save before training", "zh": "有未保存的修改——训练前请先保存"},
    "data.preview": {"en": "What the model sees", "zh": "模型实际看到的内容"},
    "data.rejected_label": {"en": "The same prompt with the rejected answer (preference rows)",
                            "zh": "同一提示配上被拒绝的回答（偏好数据行）"},
    "data.rejected_tokens": {"en": "Rejected side: {total} tokens, {trained} in its answer.",
                             "zh": "被拒绝一侧：{total} 个 token，其中回答 {trained} 个。"},
    "data.preview_label": {"en": "Selected row, token by token: green is learned, grey is context only (no loss), red is cut by max_seq_len",
                           "zh": "所选行（逐 token）：绿色为学习目标，灰色仅作上下文（不计损失），红色被 max_seq_len 截断"},
    "data.kind.trained": {"en": "trained", "zh": "训练"},
    "data.kind.masked": {"en": "masked", "zh": "屏蔽"},
    "data.kind.cut": {"en": "cut", "zh": "截断"},
    "data.kind.kept": {"en": "kept", "zh": "保留"},
    "data.problem": {"en": "problem", "zh": "问题"},
    "data.hist_tokens": {"en": "tokens", "zh": "token 数"},
    "data.hist_rows": {"en": "rows", "zh": "行数"},
    "data.hist_part": {"en": "part", "zh": "部分"},
    "data.row_invalid": {"en": "Row {n} cannot be used: {reason}", "zh": "第 {n} 行无法使用：{reason}"},
    "data.row_tokens": {"en": "**Row {n}:** {total} tokens, {trained} of them trained.",
                        "zh": "**第 {n} 行：** 共 {total} 个 token，其中 {trained} 个参与训练。"},
    "data.all_tokens": {"en": "**All {rows} valid rows:** {mean} tokens on average, longest {longest}; {trained} trained tokens in total.",
                        "zh": "**全部 {rows} 条有效行：** 平均 {mean} 个 token，最长 {longest}；共 {trained} 个训练 token。"},
    "data.truncated": {"en": "{n} rows are longer than max_seq_len = {max_len} (Train tab) and will be cut; {dropped} lose their whole answer and are dropped.",
                       "zh": "{n} 行超过 max_seq_len = {max_len}（训练页）将被截断；{dropped} 行的回答被完全截掉，将被丢弃。"},
    "data.document_tokens": {"en": "**Row {n}** is a document: {total} tokens, every one trained after the first, in {chunks} chunks of at most {max_len} (the first is shown).",
                             "zh": "**第 {n} 行**是一篇文档：{total} 个 token，除第一个外全部训练，分成 {chunks} 段，每段最多 {max_len} 个（显示第一段）。"},
    "data.all_documents": {"en": "**{docs} documents** (raw text, no template): {chunks} chunks of at most max_seq_len = {max_len} tokens; {trained} trained tokens in total. Documents are chunked, never cut.",
                           "zh": "**{docs} 篇文档**（原始文本，不套模板）：{chunks} 段，每段最多 max_seq_len = {max_len} 个 token；共训练 {trained} 个 token。文档只分段，不截断。"},
    "data.limited": {"en": "(statistics from the first {n} rows)", "zh": "（统计基于前 {n} 行）"},
    "data.hist": {"en": "Rows by length in tokens", "zh": "按 token 长度统计的行数"},
    # lora tab
    "lora.no_model": {"en": "Load a model on the Model tab to see the trainable parameters.",
                      "zh": "请先在模型页加载模型，以查看可训练参数量。"},
    "lora.count_title": {"en": "What you will train", "zh": "将要训练的参数"},
    "lora.trainable": {"en": "**Trainable parameters: {n}** ({pct}% of {total})",
                       "zh": "**可训练参数：{n}**（占 {total} 的 {pct}%）"},
    "lora.peak": {"en": "Estimated peak memory: **{gib} GiB** on {device}", "zh": "预计峰值内存：**{gib} GiB**（{device}）"},
    "lora.fits": {"en": "fits in the available memory", "zh": "可用内存足够"},
    "lora.no_fit": {"en": "does not fit: lower batch size or max_seq_len, or use 4-bit",
                    "zh": "内存不足：请减小 batch size 或 max_seq_len，或使用 4-bit"},
    "lora.lower_bound": {"en": "Memory: at least **{gib} GiB** (base weights {base} GiB + LoRA weights, gradients and optimizer {lora} MiB), plus activations.",
                         "zh": "内存：至少 **{gib} GiB**（基础权重 {base} GiB + LoRA 权重、梯度与优化器 {lora} MiB），另加激活值。"},
    "lora.load_for_memory": {"en": "Load the model for a memory figure.", "zh": "加载模型后可显示内存估计。"},
    "lora.need_target": {"en": "Choose at least one layer for LoRA.", "zh": "请至少选择一层加 LoRA。"},
    "lora.memory_part": {"en": "Part", "zh": "组成"},
    "lora.memory_size": {"en": "GiB", "zh": "GiB"},
    "lora.data_shape": {"en": "Batches as long as the data's longest rows ({tokens} tokens, answers up to {answer}).",
                        "zh": "按数据中最长的行估计批次（{tokens} 个 token，回答最多 {answer} 个）。"},
    "lora.worst_case": {"en": "Every row assumed max_seq_len = {tokens} tokens long (the data's lengths are not known).",
                        "zh": "假设每行都有 max_seq_len = {tokens} 个 token（数据长度未知）。"},
    "mem.base_weights": {"en": "Frozen base weights", "zh": "冻结的基础权重"},
    "mem.lora_weights": {"en": "LoRA weights", "zh": "LoRA 权重"},
    "mem.modules_to_save": {"en": "Fully trained modules", "zh": "全量训练的模块"},
    "mem.gradients": {"en": "Gradients", "zh": "梯度"},
    "mem.ddp_buckets": {"en": "Multi-process gradient buckets", "zh": "多进程梯度桶"},
    "mem.optimizer_states": {"en": "Optimizer state", "zh": "优化器状态"},
    "mem.activations": {"en": "Activations kept for backward", "zh": "反向传播保存的激活"},
    # Gradio's own status text, where its Chinese table has none (ui/gradio_text.py)
    "gradio.queue_position": {"en": "In queue: {position} of {size}",
                              "zh": "排队中：第 {position} 位，共 {size} 位"},
    "mem.kept_layer_outputs": {"en": "Frozen lower layers' outputs, kept per row",
                               "zh": "按行保留的冻结下层输出"},
    "mem.logits": {"en": "Logits and loss", "zh": "logits 与损失"},
    "mem.autocast_weight_copies": {"en": "Mixed-precision weight copies", "zh": "混合精度权重副本"},
    "mem.workspace": {"en": "Scratch space", "zh": "临时工作区"},
    "mem.cuda_context": {"en": "CUDA context", "zh": "CUDA 上下文"},
    "mem.runtime": {"en": "Python, PyTorch and libraries", "zh": "Python、PyTorch 与依赖库"},
    "mem.allocator_overhead": {"en": "Allocator overhead", "zh": "分配器开销"},
    # execution plan (LoRA and Train tabs)
    "plan.title": {"en": "How it will run", "zh": "运行方式"},
    "plan.device": {"en": "Device", "zh": "设备"},
    "plan.frozen base": {"en": "Frozen base", "zh": "冻结的基础模型"},
    "plan.compute dtype": {"en": "Compute dtype", "zh": "计算精度"},
    "plan.mixed precision": {"en": "Mixed precision", "zh": "混合精度"},
    "plan.optimizer": {"en": "Optimizer", "zh": "优化器"},
    "plan.attention": {"en": "Attention", "zh": "注意力实现"},
    "plan.speed-ups": {"en": "Speed-ups", "zh": "加速"},
    # train tab
    "train.start": {"en": "▶ Start training", "zh": "▶ 开始训练"},
    "train.stop": {"en": "■ Stop (saves a checkpoint)", "zh": "■ 停止（保存检查点）"},
    "train.resume": {"en": "↻ Resume", "zh": "↻ 继续训练"},
    "train.plot": {"en": "Loss: train (blue) and eval (orange)",
                   "zh": "损失：训练（蓝）与验证（橙）"},
    "train.preference_plot": {"en": "Preference: reward accuracy (blue) and margin (orange)",
                              "zh": "偏好：奖励准确率（蓝）与差距（橙）"},
    "train.logp_plot": {"en": "Log-probability of the chosen (blue) and rejected (orange) answers",
                        "zh": "chosen（蓝）与 rejected（橙）回答的对数概率"},
    "train.log": {"en": "Log", "zh": "日志"},
    "train.idle": {"en": "No training job on this server yet.", "zh": "服务器上还没有训练任务。"},
    "train.progress": {"en": "Step {step}/{total} · {pct}% · ETA {eta} · {phase}",
                       "zh": "第 {step}/{total} 步 · {pct}% · 预计剩余 {eta} · {phase}"},
    "train.status": {"en": "Status", "zh": "状态"},
    "train.status.idle": {"en": "idle", "zh": "空闲"},
    "train.status.loading": {"en": "preparing", "zh": "准备中"},
    "train.status.running": {"en": "training", "zh": "训练中"},
    "train.status.stopping": {"en": "stopping (saving a checkpoint)", "zh": "正在停止（保存检查点）"},
    "train.status.finished": {"en": "finished", "zh": "已完成"},
    "train.status.stopped": {"en": "stopped", "zh": "已停止"},
    "train.status.failed": {"en": "failed", "zh": "失败"},
    "train.numbers": {"en": "Loss **{loss}** · eval loss **{eval}** · {points} loss points · {tps} tokens/s · elapsed {elapsed}",
                      "zh": "损失 **{loss}** · 验证损失 **{eval}** · {points} 个损失点 · {tps} token/秒 · 已用时 {elapsed}"},
    "train.finished": {"en": "finished {steps} steps in {elapsed}", "zh": "完成 {steps} 步，用时 {elapsed}"},
    "train.early": {"en": "stopped early (eval loss stopped improving)", "zh": "提前停止（验证损失不再下降）"},
    "train.stopped": {"en": "stopped at step {step}/{total}; resume to continue",
                      "zh": "停在第 {step}/{total} 步；点击“继续训练”可接着训练"},
    "train.series.eval": {"en": "eval", "zh": "验证"},
    "train.axis.step": {"en": "step", "zh": "步数"},
    "train.axis.loss": {"en": "loss", "zh": "损失"},
    "train.axis.value": {"en": "value", "zh": "数值"},
    "train.best": {"en": "Kept the adapter of step **{step}**: the lowest eval loss ({loss}).",
                   "zh": "保留了第 **{step}** 步的适配器：验证损失最低（{loss}）。"},
    "train.ram": {"en": "RAM {mib} MiB", "zh": "内存 {mib} MiB"},
    "train.vram": {"en": "VRAM {mib} MiB (peak {peak} MiB)", "zh": "显存 {mib} MiB（峰值 {peak} MiB）"},
    "train.params": {"en": "Training {n} of {total} parameters on {examples} examples.",
                     "zh": "在 {examples} 条样本上训练 {total} 个参数中的 {n} 个。"},
    "train.folder": {"en": "Run folder: `{path}`", "zh": "运行目录：`{path}`"},
    "train.unsaved_data": {"en": "The Data tab has unsaved edits: save them (or reload the file) before training.",
                           "zh": "数据页有未保存的修改：训练前请先保存（或重新加载文件）。"},
    "train.exists": {"en": "{path} already holds a run: press Resume to continue it, or choose another run folder.",
                     "zh": "{path} 中已有一次训练：点击“继续训练”接着训练，或换一个运行目录。"},
    "train.no_checkpoint": {"en": "{path} has no checkpoint to resume from: press Start.",
                            "zh": "{path} 中没有可继续的检查点：请点击“开始训练”。"},
    "train.started": {"en": "Training started in {path}. You can close this page; the job keeps running.",
                      "zh": "训练已在 {path} 开始。可以关闭本页面，任务会继续运行。"},
    "train.stopping": {"en": "Stopping after this step; a checkpoint is saved.", "zh": "将在本步结束后停止，并保存检查点。"},
    # small-data advice (LoRA and Train tabs)
    "advice.title": {"en": "💡 **Small data ({rows} rows, under {limit}):** these settings taught the quickstart's facts without making it forget what it knew (measured on the Evaluate tab):",
                     "zh": "💡 **数据量小（{rows} 行，少于 {limit}）：** 这些设置让快速入门模型学会了事实，同时没有忘记原有知识（在评估页签中测得）："},
    "advice.apply": {"en": "Apply these settings", "zh": "应用这些设置"},
    "advice.phrasings": {"en": "\nAnd in the data: ask each fact in about ten different ways (questions that differ in words and word order, all with the same answer). Measured: 9 phrasings per fact over 3 epochs instead of 5 phrasings over 5 epochs taught 30–32 of the quickstart's 40 unseen questions instead of 25–28, keeping as many general answers (the quickstart's data since 2026-12-07).",
                         "zh": "\n数据方面：每条事实用大约十种不同的问法提问（用词和语序不同，答案相同）。测得：每条事实 9 种问法、训练 3 轮（而不是 5 种问法、5 轮）时，快速入门的 40 个从未见过的问题答对 30–32 个，而不是 25–28 个，保留的通识回答一样多（2026-12-07 起快速入门使用这份数据）。"},
    "advice.why.train.epochs": {"en": "with each fact asked in about ten ways, three passes make the facts stick (five phrasings need five).",
                                "zh": "每条事实有大约十种问法时，训练三轮就能记牢（五种问法需要五轮）。"},
    "advice.why.train.learning_rate": {"en": "small data takes a higher rate than the usual 2e-4 to learn in so few steps.",
                                       "zh": "数据少、步数少，需要比常用的 2e-4 更高的学习率。"},
    "advice.why.data.replay_ratio": {"en": "the base model's own answers to general questions, as many as training rows (up to the questions shipped), keep it from answering everything with the new facts.",
                                     "zh": "加入基础模型自己对通识问题的回答（与训练行数一样多，以自带的问题数为上限），避免它用新事实回答所有问题。"},
    "advice.why.lora.r": {"en": "enough capacity for a few dozen new facts.", "zh": "足以容纳几十条新事实的容量。"},
    "advice.why.lora.alpha": {"en": "alpha = 2 × r keeps the update scale standard.", "zh": "alpha = 2 × r，保持常规的更新尺度。"},
    "advice.why.lora.last_layers": {"en": "with adapters on the MLP layers only, every layer takes part.",
                                    "zh": "只在 MLP 层加适配器时，所有层都参与。"},
    "advice.why.lora.target_modules": {"en": "adapters on the feed-forward (MLP) layers, attention left as it was: measured on the quickstart, the unseen questions' answers were likelier (lower eval loss on every run), with as many facts right or more and as many general answers kept or more than with every linear layer.",
                                       "zh": "只在前馈（MLP）层加适配器、注意力层保持不变：在快速入门上实测，未见过的问题的答案概率更高（每次运行的评估损失都更低），答对的事实和保留的通识回答都不少于在所有线性层上加适配器。"},
    # evaluate tab
    "eval.data": {"en": "Questions to ask", "zh": "评估问题"},
    "eval.data_info": {"en": "A data file whose rows carry an answer and/or keywords. Empty: the run's data.eval_path, else the rows it held out from training.",
                       "zh": "每行带答案和/或关键词的数据文件。留空：使用该次训练的 data.eval_path，否则使用训练时留出的数据行。"},
    "eval.limit": {"en": "Only the first N rows (0 = all)", "zh": "只评估前 N 行（0 = 全部）"},
    "eval.max_new": {"en": "Longest answer in tokens (0 = automatic)", "zh": "回答的最大 token 数（0 = 自动）"},
    "eval.base": {"en": "Compare with the base model", "zh": "与基础模型对比"},
    "eval.base_info": {"en": "Ask the base model (adapter off) the same questions.", "zh": "用基础模型（关闭适配器）回答同样的问题。"},
    "eval.general": {"en": "Measure forgetting", "zh": "测量遗忘"},
    "eval.general_info": {"en": "Ask general-knowledge questions the base answers right: how many does the tuned model still get?",
                          "zh": "提问基础模型能答对的通识问题：微调后的模型还能答对多少？"},
    "eval.start": {"en": "Evaluate", "zh": "开始评估"},
    "eval.stop": {"en": "Stop", "zh": "停止"},
    "eval.stopping": {"en": "Stopping after the current batch…", "zh": "当前批次完成后停止…"},
    "eval.pick": {"en": "Pick a finished run to evaluate.", "zh": "请选择一个训练完成的结果进行评估。"},
    "eval.no_rows": {"en": "This run held no rows out and sets no data.eval_path: give a file of questions above.",
                     "zh": "该次训练没有留出数据行，也没有设置 data.eval_path：请在上方指定问题文件。"},
    "eval.ready": {"en": "Ready to ask the questions in {data}. Press **Evaluate**.", "zh": "将使用 {data} 中的问题。请点击 **开始评估**。"},
    "eval.idle": {"en": "Not running.", "zh": "未在运行。"},
    "eval.loading": {"en": "Loading the run's model…", "zh": "正在加载模型…"},
    "eval.progress": {"en": "{done}/{total} ({pct}%) · {phase} · {elapsed} elapsed · ETA {eta}",
                      "zh": "{done}/{total}（{pct}%）· {phase} · 已用 {elapsed} · 预计剩余 {eta}"},
    "eval.done": {"en": "Done in {seconds} s.", "zh": "完成，用时 {seconds} 秒。"},
    "eval.summary_title": {"en": "### {n} questions from `{data}` ({created})", "zh": "### 来自 `{data}` 的 {n} 个问题（{created}）"},
    "eval.was_stopped": {"en": "Stopped before the end: the figures cover the rows answered so far.",
                         "zh": "评估被提前停止：数字只覆盖已回答的行。"},
    "eval.metric": {"en": "Metric", "zh": "指标"},
    "eval.tuned": {"en": "Tuned", "zh": "微调后"},
    "eval.base_col": {"en": "Base", "zh": "基础模型"},
    "eval.change": {"en": "Change", "zh": "变化"},
    "eval.points": {"en": "{n} pts", "zh": "{n} 个百分点"},
    "eval.keyword_counts": {"en": "**Keyword hits:** {hits} of {n} answers name the fact", "zh": "**关键词命中：** {n} 个回答中有 {hits} 个说出了事实"},
    "eval.keyword_counts_base": {"en": "base model: {hits}", "zh": "基础模型：{hits}"},
    "eval.general_kept": {"en": "**General answers kept: {pct}** — the tuned model still answers {kept} of the {n} general questions its base answers right.",
                          "zh": "**通用知识保留：{pct}** —— 基础模型答对的 {n} 个通识问题中，微调后仍答对 {kept} 个。"},
    "eval.general_none": {"en": "General answers kept: – (the base model answers none of the general questions right).",
                          "zh": "通用知识保留：–（基础模型没有答对任何通识问题）。"},
    "eval.general_lost": {"en": "Forgotten (base answer → tuned answer):", "zh": "遗忘的问题（基础模型回答 → 微调后回答）："},
    "eval.worse_count": {"en": "{n} rows where the tuned model scores below its base.", "zh": "有 {n} 行微调后的得分低于基础模型。"},
    "eval.only_worse": {"en": "Only rows where the tuned model is worse than the base", "zh": "只显示微调后比基础模型差的行"},
    "eval.col.row": {"en": "Row", "zh": "行"},
    "eval.col.question": {"en": "Question", "zh": "问题"},
    "eval.col.reference": {"en": "Reference (or keywords)", "zh": "参考答案（或关键词）"},
    "eval.col.tuned": {"en": "Tuned answer", "zh": "微调后回答"},
    "eval.col.base": {"en": "Base answer", "zh": "基础模型回答"},
    "eval.col.hit": {"en": "Keyword tuned / base", "zh": "关键词 微调/基础"},
    "eval.col.rouge_l": {"en": "ROUGE-L tuned / base", "zh": "ROUGE-L 微调/基础"},
    "export.compare_evals": {"en": "Evaluations (tuned model; Evaluate tab)", "zh": "评估结果（微调后模型；见评估页签）"},
    "export.compare_questions": {"en": "Questions", "zh": "问题集"},
    # chat tab
    "chat.run": {"en": "Run", "zh": "训练结果"},
    "train.not_yours": {"en": "This training job was started by another visitor: you can watch it, but only they can stop it or resume it.",
                        "zh": "这个训练任务由另一位访问者启动：你可以查看进度，但只有对方可以停止或继续它。"},
    "chat.dropped": {"en": "The conversation was longer than the model's context: the {n} oldest question(s) and answer(s) were left out of this prompt.",
                     "zh": "对话超出了模型的上下文长度：本次提示省略了最早的 {n} 轮问答。"},
    "chat.base_only": {"en": "(base model only, no adapter)", "zh": "（仅基础模型，无适配器）"},
    "chat.refresh": {"en": "Refresh list", "zh": "刷新列表"},
    "chat.load": {"en": "Load", "zh": "加载"},
    "chat.merge": {"en": "Merge adapter (faster)", "zh": "合并适配器（更快）"},
    "chat.pick": {"en": "Choose a finished run (or the base model) and press Load — or just send a message.",
                  "zh": "选择一个已完成的训练（或基础模型）并点击加载——或直接发送消息。"},
    "chat.press_load": {"en": "Press Load, or send a message to load it.", "zh": "点击加载，或直接发送消息自动加载。"},
    "chat.loading": {"en": "Loading the model and adapter…", "zh": "正在加载模型与适配器…"},
    "chat.merging": {"en": "Merging the adapter into the weights…", "zh": "正在把适配器合并进权重…"},
    "chat.ready": {"en": "Ready: {source} (template: {template})", "zh": "就绪：{source}（模板：{template}）"},
    "chat.merged": {"en": "adapter merged", "zh": "适配器已合并"},
    "chat.no_adapter": {"en": "This is the base model: there is no adapter to merge.", "zh": "当前是基础模型，没有可合并的适配器。"},
    "chat.tuned": {"en": "Tuned model", "zh": "微调后的模型"},
    "chat.base": {"en": "Base model (same prompt)", "zh": "基础模型（同一问题）"},
    "chat.placeholder": {"en": "Ask something and press Enter…", "zh": "输入问题并按回车……"},
    "chat.message": {"en": "Message", "zh": "消息"},
    "chat.send": {"en": "Send", "zh": "发送"},
    "chat.clear": {"en": "Clear", "zh": "清空"},
    "chat.settings": {"en": "System prompt, comparison and generation settings", "zh": "系统提示词、对比与生成参数"},
    "chat.compare": {"en": "Side by side: also answer with the base model", "zh": "并排对比：同时用基础模型回答"},
    "chat.compare_info": {"en": "Shows what the fine-tuning changed.", "zh": "展示微调带来的变化。"},
    "chat.system": {"en": "System prompt", "zh": "系统提示词"},
    "chat.system_info": {"en": "Empty: the run's own system prompt (the template is always the run's).",
                         "zh": "留空则使用训练时的系统提示词（模板始终与训练一致）。"},
    "chat.empty": {"en": "Type a message first.", "zh": "请先输入消息。"},
    # export tab
    "export.pick": {"en": "Choose a finished run.", "zh": "请选择一个已完成的训练。"},
    "export.adapter": {"en": "**Adapter folder:** `{path}` — load it with peft on top of the base model.",
                       "zh": "**适配器目录：** `{path}` —— 可用 peft 加载到基础模型上。"},
    "export.dest": {"en": "Merged model folder", "zh": "合并后模型的保存目录"},
    "export.dest_info": {"en": "A new folder: the base weights with the adapter folded in, plus the tokenizer.",
                         "zh": "新目录：合并了适配器的完整权重及分词器。"},
    "export.merge": {"en": "Save merged model", "zh": "保存合并后的模型"},
    "export.done": {"en": "✅ Saved the merged model to `{path}`.", "zh": "✅ 合并后的模型已保存到 `{path}`。"},
    "export.gguf_path": {"en": "GGUF file", "zh": "GGUF 文件"},
    "export.gguf_info": {"en": "For llama.cpp and Ollama; an Ollama Modelfile with the run's template is written beside it.",
                         "zh": "用于 llama.cpp 和 Ollama；旁边会写一个带训练模板的 Ollama Modelfile。"},
    "export.gguf_type": {"en": "GGUF type", "zh": "GGUF 类型"},
    "export.gguf": {"en": "Save GGUF", "zh": "保存 GGUF"},
    "export.gguf_done": {"en": "✅ Saved `{path}` and its Ollama Modelfile.", "zh": "✅ 已保存 `{path}` 及其 Ollama Modelfile。"},
    "export.gguf_unsupported": {"en": "GGUF export is not available for this run: {why}", "zh": "此训练无法导出 GGUF：{why}"},
    "export.api": {"en": "OpenAI-compatible API", "zh": "OpenAI 兼容 API"},
    "export.api_port": {"en": "API port", "zh": "API 端口"},
    "export.api_info": {"en": "Serve the chosen run at /v1/chat/completions for your own code (the official openai client, curl, …).",
                        "zh": "以 /v1/chat/completions 提供所选训练的模型，供你自己的代码调用（官方 openai 客户端、curl 等）。"},
    "export.api_start": {"en": "Start API", "zh": "启动 API"},
    "export.api_stop": {"en": "Stop API", "zh": "停止 API"},
    "export.api_stopped": {"en": "The API is not running.", "zh": "API 未运行。"},
    "export.api_running": {"en": "✅ Serving `{source}` at **{url}** — models {models}; API key {api_key}",
                           "zh": "✅ 正在提供 `{source}`，地址 **{url}** —— 模型 {models}；API 密钥 {api_key}"},
    "export.api_snippet": {"en": "Python client (the official openai package)", "zh": "Python 客户端（官方 openai 包）"},
    "export.api_key_hidden": {"en": "(started by another user: ask them)", "zh": "（由其他用户启动：请向其索取）"},
    "export.compare": {"en": "Compare runs", "zh": "比较训练"},
    "export.compare_info": {"en": "Pick two or more runs: their loss curves overlaid and the settings that differ.",
                            "zh": "选择两个或更多训练：叠加的损失曲线和不同的设置。"},
    "export.compare_button": {"en": "Compare", "zh": "比较"},
    "export.compare_title": {"en": "Loss by run", "zh": "各训练的损失"},
    "export.setting": {"en": "setting", "zh": "设置"},
}


def _all_fields() -> list[str]:
    defaults = RunConfig()
    return [f"{section}.{f.name}" for section in SECTIONS
            for f in dataclasses.fields(getattr(defaults, section))]


def _add_fields() -> None:
    for dotted in _all_fields():
        en, zh = FIELD_LABELS.get(dotted, (dotted, ""))
        TABLE[f"field.{dotted}"] = {"en": en, "zh": zh}
        help_en = field_help(dotted)
        if dotted == "lora.target_modules":
            help_en = ("Which linear layers get adapters. All ticked = 'all-linear'; "
                       "attention only (q_proj, v_proj) trains fewer parameters.")
        TABLE[f"help.{dotted}"] = {"en": help_en, "zh": ZH_HELP.get(dotted, "")}


_add_fields()
TABLE.update({f"msg.{key}": {"en": en, "zh": ZH_MESSAGES.get(key, "")}
              for key, en in ENGLISH.items()})
TABLE.update({f"phase.{en}": {"en": en, "zh": zh} for en, zh in PHASES.items()})
TABLE.update({f"eval.label.{key}": {"en": en, "zh": ZH_METRICS.get(key, "")}
              for key, en in LABELS.items()})


def t(key: str, lang: str = "en", **values) -> str:
    """The text for ``key`` in ``lang`` (English when the language is unknown)."""
    entry = TABLE[key]
    text = entry.get(lang) or entry["en"]
    return text.format(**values) if values else text


def colors_by_name(colors: dict[str, str]) -> dict[str, str]:
    """A chart's ``color_map`` from locale keys: each series' name in every language gets
    its colour. The chart colours the names its data holds, so one map serves a page in
    any language (a map sent with each update reached the chart after its data: lines
    whose name it lacked were drawn without a colour, i.e. not at all)."""
    return {t(key, lang): color for key, color in colors.items() for lang in LANGUAGES}


def say(text: str, lang: str = "en") -> str:
    """A core sentence in ``lang``: a ``Message`` by its key, any other text as it is. A
    value named ``where`` is a row's place in its file ("line 3") and is said as one."""
    if isinstance(text, Message):
        return t(f"msg.{text.key}", lang).format(   # formatted even without values: "{{"
            **{k: place(v, lang) if k == "where" else say(v, lang) if isinstance(v, str)
               else v for k, v in text.values.items()})
    return text


_PLACE = re.compile(r"(line|item|row) (\d+)")
_ZH_PLACE = {"line": "第 {n} 行", "item": "第 {n} 项", "row": "第 {n} 行"}


def place(where, lang: str = "en") -> str:
    """A row's place in its file ("line 3", "item 2", "row 7") in ``lang``."""
    match = _PLACE.fullmatch(str(where))
    if lang != "zh" or not match:
        return str(where)
    return _ZH_PLACE[match.group(1)].format(n=match.group(2))


def phase(text: str, lang: str = "en") -> str:
    """A job's phase in ``lang``: 'reading data (37%)' keeps its figure; unknown ones as they are."""
    name, sep, rest = (text or "").partition(" (")
    entry = TABLE.get(f"phase.{name}")
    return (entry.get(lang) or entry["en"]) + sep + rest if entry else text
