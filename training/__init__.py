"""Headless VQGAN training (taming recipe, faster step, DDP, exact resume); imports ``vqgan_core``, never the reverse."""
