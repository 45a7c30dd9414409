"""mtprun: a local LLM runner for GGUF files with exact Multi-Token Prediction drafting."""

__version__ = "0.1.0"
__all__ = ["Model", "load"]


def __getattr__(name: str):
    # Imported lazily so that `import mtprun.convert` or the CLI's --help do not pay for the runner.
    if name in __all__:
        from mtprun.runner import api

        return getattr(api, name)
    raise AttributeError(f"module 'mtprun' has no attribute {name!r}")
