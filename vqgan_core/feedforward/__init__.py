"""Feed-forward text-to-latent networks: one pass from a CLIP text embedding to a VQGAN latent grid.

Why: the optimiser needs hundreds of steps per prompt; a network trained once with the same CLIP loss
(``python -m training.feed_forward``) gives a start (or a finished image) in one forward pass.
"""
