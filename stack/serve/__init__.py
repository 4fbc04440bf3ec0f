"""OpenAI-compatible HTTP server for models running on the NPU (`npu serve MODEL`)."""

from stack.serve.app import VERSION, build_app

__all__ = ["build_app", "VERSION", "add_arguments", "serve"]


def __getattr__(name):
    if name in ("add_arguments", "serve"):
        from stack.serve import server

        return getattr(server, name)
    raise AttributeError(name)
