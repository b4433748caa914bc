"""VQ latents: initial latents, files, token edits, masks, codebook sampling and grid operations."""
