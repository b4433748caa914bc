"""How CLIP sees a generated image: cutout methods and their augmentations."""
