"""Small helpers with no dependencies inside the core: name registries, atomic file writing, finite-value checks."""
