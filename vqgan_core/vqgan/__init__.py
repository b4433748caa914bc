"""The VQGAN model (taming-transformers' design and parameter names): config, layers, encoder/decoder, quantizers."""
