"""One module per CLI command; `syncd.cli` imports them lazily so `syncd --help` stays fast."""
