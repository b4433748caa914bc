"""CLIP guides: loading open_clip models (one or an ensemble) and their speed patches."""
