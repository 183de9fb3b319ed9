"""The core's sentences (``finetune_gui.messages``) and its phase names in 简体中文.

``locale`` adds them to its one table: a message under ``msg.<key>`` (English from the core),
a phase of a training or evaluation job under ``phase.<english phase>``, an evaluation
metric under ``eval.label.<metric>``.
"""

from __future__ import annotations

ZH_MESSAGES: dict[str, str] = {
    "hw.cpu": "CPU：{name} —— {cores} 核",
    "hw.cpu_bf16": "CPU：{name} —— {cores} 核（支持 bf16）",
    "hw.ram": "内存：可用 {free} GiB，共 {total} GiB",
    "hw.no_gpu": "GPU：未找到 —— 在 CPU 上训练",
    "hw.gpu": "GPU {index}：{name} —— 可用 {free} GiB，共 {total} GiB",
    "card.architecture": "架构：{name}",
    "card.parameters": "参数量：{n}（{millions} M）",
    "card.layers": "层数：{layers} · 隐藏维度 {hidden} · 词表 {vocab}",
    "card.weights": "权重：{dtype}，量化 {quantization}，位于 {device}",
    "card.footprint": "内存占用：{mib} MiB",
    "card.linear": "线性层（LoRA 目标）：{names}",
    "plan.cpu_bf16": "CPU 原生支持 bf16：加载后冻结的基础模型以 bf16 保存，与 GPU 上相同",
    "plan.no_bitsandbytes": "{quantization} 需要 bitsandbytes，但它没有安装",
    "plan.4bit_speedups_off": "CPU 上保持 4-bit：加速已关闭",
    "plan.4bit_size_unknown": "保持 4-bit：加载前不知道模型大小",
    "plan.4bit_no_room": "保持 4-bit：基础模型的 {dtype} 副本需要 {need} GiB，超过可用内存中的 {room} GiB",
    "plan.4bit_dequantised": "CPU 上的 4-bit：基础模型先量化为 NF4，再一次性反量化为 {dtype}（{need} GiB，数值与每步反量化相同），以便使用快速路径",
    "plan.no_liger": "跳过 Liger 内核：没有安装 liger-kernel",
    "cfg.bool": "{where} 必须是 true 或 false，当前为 {got}",
    "cfg.int": "{where} 必须是整数，当前为 {got}",
    "cfg.number": "{where} 必须是数字，当前为 {got}",
    "cfg.finite": "{where} 必须是有限的数字，当前为 {got}",
    "cfg.text": "{where} 必须是文本，当前为 {got}",
    "cfg.text_long": "{where} 有 {n} 个字符，最多允许 {most} 个",
    "cfg.names": "{where} 必须是名称列表，当前为 {got}",
    "cfg.names_long": "{where}：名称太多，或有名称太长",
    "cfg.choice": "{where} 必须是以下之一：{choices}；当前为 {got}",
    "cfg.min": "{where} 必须 {op} {limit}，当前为 {got}",
    "cfg.max": "{where} 必须 <= {limit}，当前为 {got}",
    "row.not_object": "应为带字段的对象，实际为 {kind}",
    "row.missing": "缺少字段 '{name}'",
    "row.not_text": "字段 '{name}' 必须是文本，实际为 {kind}",
    "row.empty": "字段 '{name}' 为空",
    "row.keywords": "字段 'keywords' 必须是文本或文本列表",
    "row.not_json_list": "字段 '{name}' 是文本，但不是 JSON 列表",
    "row.no_messages": "字段 '{name}' 必须是非空的消息列表",
    "row.no_answer": "'{name}' 中没有可供学习的 assistant 回答",
    "row.msg_not_object": "{at} 必须是对象",
    "row.msg_role": "{at}：未知的 {field} {role}（应为 system、user 或 assistant）",
    "row.msg_empty": "{at}：'{field}' 缺失或为空",
    "row.msg_system_late": "{at}：system 消息只能放在最前面",
    "row.msg_two_users": "{at}：连续出现两条 user 消息",
    "row.msg_no_user": "{at}：assistant 消息之前没有 user 消息",
    "row.other_format": "此行是 {row} 格式，但文件是 {file} 格式：每个文件只能用一种格式",
    "row.pref_same": "'chosen' 和 'rejected' 是同一个回答：无从偏好",
    "row.pref_prompt": "字段 'prompt' 必须是文本或非空的消息列表",
    "row.pref_prompt_end": "'prompt' 必须以回答所针对的 user 消息结尾",
    "row.pref_one_message": "字段 '{name}' 必须是文本或一条 assistant 消息，实际有 {n} 条消息",
    "row.pref_assistant": "{at} 必须是 assistant 消息",
    "row.kto_label": "字段 'label' 必须是 true 或 false，实际为 {got}",
}

# What a job is doing (JobState.phase, the evaluation's Progress.phase), as the core names it.
PHASES: dict[str, str] = {
    "starting": "启动中",
    "reading data": "读取数据",
    "loading model": "加载模型",
    "tokenising": "分词",
    "reference log-probabilities": "计算参考对数概率",
    "training": "训练中",
    "saving adapter": "保存适配器",
    "launching": "启动进程",
    "tuned answers": "微调后模型作答",
    "base answers": "基础模型作答",
    "tuned eval loss": "微调后模型的验证损失",
    "base eval loss": "基础模型的验证损失",
    "general questions": "通识问题",
    "general questions, base": "通识问题，基础模型",
    "general questions, tuned": "通识问题，微调后模型",
}

# Evaluation metrics (English: evaluation.report.LABELS).
ZH_METRICS: dict[str, str] = {
    "exact_match": "完全匹配",
    "keyword_hit": "关键词命中",
    "rouge_l": "ROUGE-L",
    "chrf": "chrF",
    "eval_loss": "验证损失",
    "perplexity": "困惑度",
    "general_kept": "通用知识保留",
}
