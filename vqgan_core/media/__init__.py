"""Images and frame sequences in and out (files, URLs, PNG metadata, animated formats, video)."""
