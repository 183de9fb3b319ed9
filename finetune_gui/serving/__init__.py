"""An OpenAI-compatible API for a tuned run: ``python -m finetune_gui serve RUN_DIR``.

protocol: the wire format (requests checked, answers and errors shaped as OpenAI's);
batcher: concurrent requests answered together; server: what is served and under which
ids; http: FastAPI routes and the uvicorn runner.
"""
