"""What a run minimises: prompts, CLIP-space targets, regions, the losses, image losses and scoring."""
