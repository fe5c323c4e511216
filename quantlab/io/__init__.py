"""Model I/O: model sources and safetensors headers, activation capture, sizing, export and the CLI."""
