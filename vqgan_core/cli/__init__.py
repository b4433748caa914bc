"""The command line: ``python -m vqgan_core {convert,info,generate,animate}``."""
