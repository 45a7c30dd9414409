"""The runner: GGUF loading, tokenizer, chat templates, model graphs, caches, the MTP draft loop, CLI."""
